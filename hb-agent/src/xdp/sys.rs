//! The two bpf(2) commands aya 0.14 does not offer: opening a pinned object by path as a
//! plain descriptor, and `BPF_LINK_DETACH` (Linux 5.9), which detaches a link at once,
//! whoever else still holds it. Dropping a link's last reference detaches it too, but
//! through an RCU grace period and a workqueue when the reference was a bpffs pin, so not
//! before the caller moves on to opening sockets.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd as _, BorrowedFd, FromRawFd as _, OwnedFd};
use std::os::unix::ffi::OsStrExt as _;
use std::path::Path;

/// `enum bpf_cmd` values from `linux/bpf.h`.
const BPF_OBJ_GET: libc::c_long = 7;
const BPF_LINK_DETACH: libc::c_long = 34;

/// The `BPF_OBJ_*` member of `union bpf_attr` (without the later `path_fd`, left zero).
#[repr(C)]
struct ObjGetAttr {
    pathname: u64,
    bpf_fd: u32,
    file_flags: u32,
}

/// The `link_detach` member of `union bpf_attr`.
#[repr(C)]
struct LinkDetachAttr {
    link_fd: u32,
}

/// Opens the object pinned at `path`.
pub fn obj_get(path: &Path) -> io::Result<OwnedFd> {
    let path = CString::new(path.as_os_str().as_bytes())
        .map_err(|error| io::Error::new(io::ErrorKind::InvalidInput, error))?;
    let attr = ObjGetAttr {
        pathname: path.as_ptr() as u64,
        bpf_fd: 0,
        file_flags: 0,
    };
    let fd = bpf(BPF_OBJ_GET, &attr)?;
    // SAFETY: BPF_OBJ_GET returned a new descriptor (close-on-exec) that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Detaches the link behind `link` from its interface now.
pub fn link_detach(link: BorrowedFd<'_>) -> io::Result<()> {
    let attr = LinkDetachAttr {
        link_fd: link.as_raw_fd() as u32,
    };
    bpf(BPF_LINK_DETACH, &attr).map(drop)
}

fn bpf<T>(cmd: libc::c_long, attr: &T) -> io::Result<i32> {
    // SAFETY: `attr` is a live, fully initialised #[repr(C)] prefix of `union bpf_attr` for
    // `cmd` (any pointer in it outlives the call), and its exact size is passed: the kernel
    // copies that many bytes and zero-fills the rest of the union.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            std::ptr::from_ref(attr),
            std::mem::size_of::<T>(),
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        i32::try_from(rc).map_err(|_| io::Error::other("bpf(2) returned an impossible descriptor"))
    }
}
