//! Which interface a pinned link is attached to.
//!
//! A pinned XDP or tcx link outlives its interface: when the NIC or bond is
//! deleted and created again (same name, new device), the kernel detaches
//! the link (its interface becomes 0) but the pin keeps the link object.
//! Updating the program behind such a link "succeeds" and attaches nothing,
//! so the loader checks the link's interface before reusing it.
//!
//! aya 0.16's `LinkInfo` does not expose the interface and `FdLink` does not
//! expose its fd, so this reads `struct bpf_link_info` with two bpf(2) calls
//! (BPF_OBJ_GET, BPF_OBJ_GET_INFO_BY_FD): fixed UAPI, a few lines.
use std::{
    ffi::CString,
    os::{fd::FromRawFd, unix::ffi::OsStrExt},
    path::Path,
};

use anyhow::{Context, Result, bail};

const BPF_OBJ_GET: libc::c_long = 7;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
/// `struct bpf_link_info`: type, id, prog_id, then the per-type union
/// (8-byte aligned), whose xdp and tcx members start with the ifindex.
const LINK_INFO_IFINDEX: usize = 16;

/// The ifindex the link pinned at `pin` is attached to; 0 if detached.
pub fn ifindex(pin: &Path) -> Result<u32> {
    let path = CString::new(pin.as_os_str().as_bytes())
        .with_context(|| format!("{} contains a NUL byte", pin.display()))?;
    // union bpf_attr, BPF_OBJ_GET: pathname (u64), bpf_fd, file_flags.
    let mut attr = [0u64; 16];
    attr[0] = path.as_ptr() as u64;
    let fd = bpf(BPF_OBJ_GET, &mut attr)
        .with_context(|| format!("opening pinned link {}", pin.display()))?;
    // SAFETY: BPF_OBJ_GET returned a new fd that nothing else owns.
    let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
    let mut info = [0u8; 64];
    let mut attr = [0u64; 16];
    // BPF_OBJ_GET_INFO_BY_FD: bpf_fd (u32), info_len (u32), info (u64).
    attr[0] = u64::from(std::os::fd::AsRawFd::as_raw_fd(&fd) as u32) | ((info.len() as u64) << 32);
    attr[1] = info.as_mut_ptr() as u64;
    bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr)
        .with_context(|| format!("reading link info of {}", pin.display()))?;
    let at = LINK_INFO_IFINDEX;
    Ok(u32::from_ne_bytes([
        info[at],
        info[at + 1],
        info[at + 2],
        info[at + 3],
    ]))
}

fn bpf(cmd: libc::c_long, attr: &mut [u64; 16]) -> Result<i32> {
    // SAFETY: attr is a zeroed union bpf_attr of 128 bytes whose pointers
    // (path, info buffer) outlive the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr.as_mut_ptr(),
            std::mem::size_of_val(attr),
        )
    };
    if rc < 0 {
        bail!(std::io::Error::last_os_error());
    }
    Ok(rc as i32)
}

/// The ifindex of `iface` in the calling thread's namespace (0: none).
pub fn iface_index(iface: &str) -> u32 {
    match CString::new(iface) {
        // SAFETY: a valid C string.
        Ok(name) => unsafe { libc::if_nametoindex(name.as_ptr()) },
        Err(_) => 0,
    }
}
