//! Which node owns a flow: the kernel's hash (dataplane_common) applied to
//! the same table, so tests and operators can predict where a connection
//! lands without sending a packet.
use std::net::IpAddr;

use dataplane_common::{Bucket, bucket_index, flow_hash_v4, flow_hash_v6};

/// A flow in the client-to-VIP direction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Flow {
    pub client: IpAddr,
    pub client_port: u16,
    pub vip: IpAddr,
    pub vip_port: u16,
    /// 6 (TCP) or 17 (UDP).
    pub proto: u8,
}

impl Flow {
    /// The flow hash, exactly as the XDP program computes it. None when the
    /// two addresses are of different families (no such packet exists).
    pub fn hash(&self, seed: u32) -> Option<u32> {
        let mut ports = [0u8; 4];
        ports[..2].copy_from_slice(&self.client_port.to_be_bytes());
        ports[2..].copy_from_slice(&self.vip_port.to_be_bytes());
        match (self.client, self.vip) {
            (IpAddr::V4(c), IpAddr::V4(v)) => Some(flow_hash_v4(
                &c.octets(),
                &v.octets(),
                &ports,
                self.proto,
                seed,
            )),
            (IpAddr::V6(c), IpAddr::V6(v)) => Some(flow_hash_v6(
                &c.octets(),
                &v.octets(),
                &ports,
                self.proto,
                seed,
            )),
            _ => None,
        }
    }

    /// Position of the flow's bucket in a table of `table_size` entries.
    pub fn bucket_index(&self, seed: u32, table_size: usize) -> Option<usize> {
        if table_size == 0 {
            return None;
        }
        let size = u32::try_from(table_size).ok()?;
        Some(bucket_index(self.hash(seed)?, size) as usize)
    }

    /// The bucket (first and second hop) the flow maps to.
    pub fn bucket(&self, seed: u32, table: &[Bucket]) -> Option<Bucket> {
        Some(table[self.bucket_index(seed, table.len())?])
    }

    /// The owner (first hop) of the flow in a Maglev owner table.
    pub fn owner(&self, seed: u32, owners: &[u16]) -> Option<u16> {
        Some(owners[self.bucket_index(seed, owners.len())?])
    }
}
