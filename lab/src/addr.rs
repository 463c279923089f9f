//! The site's addressing plan, shared by the dataplane lab, lbd's tests and
//! the storage-site lab: node `id` sits on its own /28 (IPv4) and /64
//! (IPv6) link to the router, 192.0.2.(16·id+2) and 2001:db8:id::2, the
//! router being 192.0.2.(16·id+1) and 2001:db8:id::1.
use std::net::{Ipv4Addr, Ipv6Addr};

pub fn node4(id: u16) -> Ipv4Addr {
    Ipv4Addr::new(192, 0, 2, (16 * id + 2) as u8)
}

pub fn router_to_node4(id: u16) -> Ipv4Addr {
    Ipv4Addr::new(192, 0, 2, (16 * id + 1) as u8)
}

pub fn node6(id: u16) -> Ipv6Addr {
    Ipv6Addr::new(0x2001, 0xdb8, id, 0, 0, 0, 0, 2)
}

pub fn router_to_node6(id: u16) -> Ipv6Addr {
    Ipv6Addr::new(0x2001, 0xdb8, id, 0, 0, 0, 0, 1)
}
