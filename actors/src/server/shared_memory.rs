//! Triton's system shared-memory extension: regions a client on the same
//! host creates (POSIX shared memory, `shm_open`) and registers with the
//! server, so an input is read, and an output written, where it lies
//! instead of travelling in the HTTP body. For a 602 kB camera frame the
//! body's trip through the loopback is most of what the HTTP path adds
//! over the in-process API (docs/results.md §9.1); a shared-memory input
//! is read by the model where the client wrote it, with no copy at all.
//!
//! Off unless `ecomap serve --allow-client-shm` (as Triton's
//! `--allow-client-shm`), and then only for clients on this host (the
//! server refuses every shared-memory request from another address), each
//! within its own user's objects: the server looks up which user owns the
//! client's end of the connection ([`peer_uid`]) and lets it register only
//! objects that user owns and use only regions that user registered (root
//! may use any) — the server usually runs as root for SCHED_FIFO, and
//! another local user must not read or overwrite an object through it. A
//! key names a regular file in /dev/shm itself: no symlink is followed, so
//! a registration cannot map another file the server may write. The
//! region's pages are allocated when it is registered (charged to the
//! server's memory cgroup), so a full /dev/shm is a refused registration
//! rather than a fault later; but a client that truncates the object under
//! a registered region, or punches a hole in it, makes the server's next
//! access fault (SIGBUS) and the server dies — only a trusted local client
//! may use it. Behind a proxy on the same host every client arrives from
//! loopback as the proxy's user: do not allow client shared memory there.
//!
//! The contract, Triton's: the client does not write a region while a
//! request that reads it, or will write an output into it, is in flight —
//! until its answer, or for a request answered 504, until it ends (the
//! model may still be reading it). A region unregistered while a request
//! still reads it stays mapped until that request is done. An output's
//! place may not overlap its own request's input (checked; the synthetic
//! echo model returns its input's very bytes).

use crate::server::protocol::SharedMemoryRef;
use bytes::Bytes;
use memmap2::{MmapOptions, MmapRaw};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// Where `shm_open` keeps its objects on Linux.
const SHM_DIR: &str = "/dev/shm";

/// The most regions one user may have registered at once: each is a
/// mapping held in the server's address space while it is registered.
pub const MAX_REGIONS: usize = 1024;

/// Why a shared-memory request cannot be done (a 400, with this text).
#[derive(Debug, thiserror::Error)]
pub enum SharedMemoryError {
    /// The server was started without `--allow-client-shm`.
    #[error(
        "system shared memory is off on this server; start `ecomap serve` with \
         --allow-client-shm to let local clients register regions"
    )]
    Disabled,
    /// The key cannot name a POSIX shared-memory object.
    #[error("key {key:?}: {why}")]
    BadKey {
        /// The key given.
        key: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// The object could not be opened or mapped.
    #[error("key {key:?}: cannot open or map {path}: {source}")]
    Open {
        /// The key given.
        key: String,
        /// The file it names.
        path: PathBuf,
        /// The system's error.
        source: std::io::Error,
    },
    /// The region reaches past the object's end, or is empty.
    #[error(
        "key {key:?}: a region of {byte_size} bytes at offset {offset} does not fit in the \
         object's {size} bytes (and must not be empty)"
    )]
    OutOfObject {
        /// The key given.
        key: String,
        /// The region's offset in the object.
        offset: u64,
        /// The region's size.
        byte_size: u64,
        /// The object's size.
        size: u64,
    },
    /// A region of that name is registered already.
    #[error("region '{0}' is registered already; unregister it first")]
    Exists(String),
    /// No region of that name is registered (by the client's user).
    #[error("no shared-memory region '{0}' is registered by the client's user")]
    Unknown(String),
    /// Too many regions are registered.
    #[error("this user has {MAX_REGIONS} regions registered already; unregister some first")]
    TooMany,
    /// The region's pages could not be allocated (a full /dev/shm).
    #[error(
        "key {key:?}: cannot allocate the region's {byte_size} bytes in {SHM_DIR} ({source}); \
         free or enlarge {SHM_DIR} (a container's is 64 MB unless given --shm-size)"
    )]
    NoSpace {
        /// The key given.
        key: String,
        /// The region's size.
        byte_size: u64,
        /// The system's error.
        source: std::io::Error,
    },
    /// The key names something other than a regular file.
    #[error("key {key:?}: {path} is not a regular file (a FIFO, a socket or a device)")]
    NotAFile {
        /// The key given.
        key: String,
        /// The file it names.
        path: PathBuf,
    },
    /// The object belongs to another user than the client's.
    #[error(
        "key {key:?}: the object belongs to user {owner}, not to the client's user {client}; \
         a client registers only its own user's objects"
    )]
    NotYours {
        /// The key given.
        key: String,
        /// The object's owner.
        owner: u32,
        /// The client's user.
        client: u32,
    },
    /// An output's place overlaps its request's input.
    #[error(
        "output '{output}' in region '{region}' overlaps the request's input '{input}'; give \
         the output a place of its own"
    )]
    Overlap {
        /// The output.
        output: String,
        /// Its region.
        region: String,
        /// The input it overlaps.
        input: String,
    },
    /// A tensor's place reaches past its region's end.
    #[error(
        "{tensor}: {byte_size} bytes at offset {offset} run past the {size} bytes of \
         region '{region}'"
    )]
    OutOfRegion {
        /// Which tensor.
        tensor: String,
        /// The region named.
        region: String,
        /// The tensor's offset in it.
        offset: usize,
        /// The tensor's size.
        byte_size: usize,
        /// The region's size.
        size: usize,
    },
    /// An output is larger than the room its request gave it.
    #[error(
        "output '{output}' is {size} bytes, over the {byte_size} bytes its request gave it in \
         region '{region}'"
    )]
    NoRoom {
        /// The output.
        output: String,
        /// The region named.
        region: String,
        /// The room given.
        byte_size: usize,
        /// The output's size.
        size: usize,
    },
}

/// One registered region: a mapping of `byte_size` bytes of the object
/// `key`, from `offset`.
#[derive(Debug)]
struct Region {
    key: String,
    offset: u64,
    /// The object's device and inode: two regions of one object (under
    /// two names, or two keys linked to it) are told apart from two
    /// objects.
    object: (u64, u64),
    map: MmapRaw,
}

/// Whether `client` may register an object `owner` owns: its own, or any
/// for root.
fn allowed(client: u32, owner: u32) -> bool {
    client == 0 || client == owner
}

/// A tensor's place, resolved once: the region it was checked against is
/// the one read or written, even if the name is unregistered and
/// registered again meanwhile.
#[derive(Debug, Clone)]
pub struct Place {
    region: Arc<Region>,
    at: SharedMemoryRef,
}

impl Place {
    /// The object's bytes this place covers. No overflow: the place lies
    /// within its region and the region within its object (both checked).
    fn object_range(&self) -> std::ops::Range<u64> {
        let start = self.region.offset + self.at.offset as u64;
        start..start + self.at.byte_size as u64
    }

    /// Whether the two places share any byte of one object (through the
    /// same region or two regions of it).
    pub fn overlaps(&self, other: &Place) -> bool {
        let (a, b) = (self.object_range(), other.object_range());
        self.region.object == other.region.object && a.start < b.end && b.start < a.end
    }

    /// The bytes, read where they lie: no copy, and the region stays
    /// mapped while they are held.
    pub fn read(&self) -> Bytes {
        Bytes::from_owner(RegionBytes {
            region: self.region.clone(),
            start: self.at.offset,
            len: self.at.byte_size,
        })
    }

    /// The place's region name, offset and size, as the request gave them.
    pub fn at(&self) -> &SharedMemoryRef {
        &self.at
    }
}

/// A registered region as the status endpoint lists it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RegionStatus {
    /// The region's name.
    pub name: String,
    /// The shared-memory object's key.
    pub key: String,
    /// The region's start in the object.
    pub offset: u64,
    /// The region's size.
    pub byte_size: u64,
}

/// The registered regions, by the user that registered them and name:
/// each user has names of its own, so no user learns, takes or uses
/// another's.
#[derive(Debug, Default)]
pub struct SharedMemory {
    regions: Mutex<BTreeMap<(u32, String), Arc<Region>>>,
}

/// A tensor's bytes inside a region; holds the region mapped.
struct RegionBytes {
    region: Arc<Region>,
    start: usize,
    len: usize,
}

impl AsRef<[u8]> for RegionBytes {
    fn as_ref(&self) -> &[u8] {
        debug_assert!(self.start + self.len <= self.region.map.len());
        // SAFETY: `start + len` lies within the mapping (checked in
        // `locate` before the place this is built from), which stays mapped while `self.region`
        // lives. The bytes are plain numbers the model reads; that the
        // client does not write them while the request is in flight is the
        // extension's contract (module doc), as with Triton.
        unsafe { std::slice::from_raw_parts(self.region.map.as_ptr().add(self.start), self.len) }
    }
}

fn object_path(key: &str) -> Result<PathBuf, SharedMemoryError> {
    let bad = |why| SharedMemoryError::BadKey {
        key: key.into(),
        why,
    };
    // `shm_open` takes "/name" (the slash optional on Linux) and nothing
    // else: no other slash, so a key cannot name a file outside /dev/shm.
    let name = key.strip_prefix('/').unwrap_or(key);
    if name.is_empty() || name.len() > 255 {
        return Err(bad(
            "must be a name of 1 to 255 bytes, e.g. \"/ecomap_input\"",
        ));
    }
    if name.contains('/') || name == "." || name == ".." || name.contains('\0') {
        return Err(bad(
            "must be a POSIX shared-memory name: one '/' at the start at most, no other",
        ));
    }
    Ok(PathBuf::from(SHM_DIR).join(name))
}

impl SharedMemory {
    /// Register `byte_size` bytes of the object `key` from `offset` as
    /// region `name`, for a client running as user `client`. Allocates the
    /// region's pages: call it off the HTTP thread.
    pub fn register(
        &self,
        name: &str,
        key: &str,
        offset: u64,
        byte_size: u64,
        client: u32,
    ) -> Result<(), SharedMemoryError> {
        let path = object_path(key)?;
        let open = |source| SharedMemoryError::Open {
            key: key.into(),
            path: path.clone(),
            source,
        };
        use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _};
        // No symlink followed (a link in /dev/shm could name any file the
        // server may write), and no wait on a FIFO's other end.
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(&path)
            .map_err(open)?;
        let meta = file.metadata().map_err(open)?;
        if !meta.file_type().is_file() {
            return Err(SharedMemoryError::NotAFile {
                key: key.into(),
                path,
            });
        }
        if !allowed(client, meta.uid()) {
            return Err(SharedMemoryError::NotYours {
                key: key.into(),
                owner: meta.uid(),
                client,
            });
        }
        let size = meta.len();
        if byte_size == 0 || offset.checked_add(byte_size).is_none_or(|end| end > size) {
            return Err(SharedMemoryError::OutOfObject {
                key: key.into(),
                offset,
                byte_size,
                size,
            });
        }
        let len = usize::try_from(byte_size).map_err(|_| SharedMemoryError::OutOfObject {
            key: key.into(),
            offset,
            byte_size,
            size,
        })?;
        // Allocate the region's pages now (those the client wrote are
        // kept): a client's object is usually sparse (ftruncate only), and
        // the first write into a hole of a full tmpfs would be a SIGBUS
        // that kills the server, not an error.
        let (start, length) = (
            libc::off_t::try_from(offset),
            libc::off_t::try_from(byte_size),
        );
        let (Ok(start), Ok(length)) = (start, length) else {
            return Err(SharedMemoryError::OutOfObject {
                key: key.into(),
                offset,
                byte_size,
                size,
            });
        };
        loop {
            // SAFETY: `fallocate` only reads its integer arguments; the fd
            // is open for the duration of the call (`file` lives to the end
            // of this function).
            let rc = unsafe {
                libc::fallocate(std::os::fd::AsRawFd::as_raw_fd(&file), 0, start, length)
            };
            if rc == 0 {
                break;
            }
            let source = std::io::Error::last_os_error();
            // tmpfs gives up a long allocation when a signal is pending.
            if source.kind() != std::io::ErrorKind::Interrupted {
                return Err(SharedMemoryError::NoSpace {
                    key: key.into(),
                    byte_size,
                    source,
                });
            }
        }
        let mut regions = self.regions.lock().unwrap_or_else(|p| p.into_inner());
        let key_of = (client, name.to_string());
        if regions.contains_key(&key_of) {
            return Err(SharedMemoryError::Exists(name.into()));
        }
        if regions
            .range((client, String::new())..)
            .take_while(|((u, _), _)| *u == client)
            .count()
            >= MAX_REGIONS
        {
            return Err(SharedMemoryError::TooMany);
        }
        // A shared mapping, read and write: inputs are read from it,
        // outputs written to it. The file may be closed after.
        let map = MmapOptions::new()
            .offset(offset)
            .len(len)
            .map_raw(&file)
            .map_err(open)?;
        regions.insert(
            key_of,
            Arc::new(Region {
                key: key.into(),
                offset,
                object: (meta.dev(), meta.ino()),
                map,
            }),
        );
        Ok(())
    }

    /// Unregister `client`'s region `name`, or all its regions; a name not
    /// registered is not an error (there is nothing to undo), as with
    /// Triton.
    pub fn unregister(&self, name: Option<&str>, client: u32) {
        let mut regions = self.regions.lock().unwrap_or_else(|p| p.into_inner());
        match name {
            Some(n) => {
                regions.remove(&(client, n.to_string()));
            }
            None => regions.retain(|(u, _), _| *u != client),
        }
    }

    /// `client`'s regions (one, if `name` is given).
    pub fn status(
        &self,
        name: Option<&str>,
        client: u32,
    ) -> Result<Vec<RegionStatus>, SharedMemoryError> {
        let regions = self.regions.lock().unwrap_or_else(|p| p.into_inner());
        let row = |n: &str, r: &Arc<Region>| RegionStatus {
            name: n.to_string(),
            key: r.key.clone(),
            offset: r.offset,
            byte_size: r.map.len() as u64,
        };
        match name {
            None => Ok(regions
                .iter()
                .filter(|((u, _), _)| *u == client)
                .map(|((_, n), r)| row(n, r))
                .collect()),
            Some(n) => regions
                .get(&(client, n.to_string()))
                .map(|r| vec![row(n, r)])
                .ok_or_else(|| SharedMemoryError::Unknown(n.into())),
        }
    }

    /// Resolve `at` for a client running as user `client`: one of that
    /// user's regions, and room in it. `tensor` names it in errors.
    pub fn locate(
        &self,
        at: &SharedMemoryRef,
        tensor: &str,
        client: u32,
    ) -> Result<Place, SharedMemoryError> {
        let region = self
            .regions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(client, at.region.clone()))
            .cloned()
            .ok_or_else(|| SharedMemoryError::Unknown(at.region.clone()))?;
        let size = region.map.len();
        if at
            .offset
            .checked_add(at.byte_size)
            .is_none_or(|end| end > size)
        {
            return Err(SharedMemoryError::OutOfRegion {
                tensor: tensor.into(),
                region: at.region.clone(),
                offset: at.offset,
                byte_size: at.byte_size,
                size,
            });
        }
        Ok(Place {
            region,
            at: at.clone(),
        })
    }

    /// Write each output's bytes at its place, resolved before the request
    /// was submitted: every room is checked first, and that no place
    /// shares a byte with `input` (the request's own shared-memory input,
    /// which the echo model returns as its output), so either all are
    /// written or none (a client told "400" finds no region overwritten).
    pub(crate) fn write_outputs(
        outputs: &[(&Place, &str, &[u8])],
        input: Option<(&str, &Place)>,
    ) -> Result<(), SharedMemoryError> {
        for &(place, output, data) in outputs {
            if data.len() > place.at.byte_size {
                return Err(SharedMemoryError::NoRoom {
                    output: output.into(),
                    region: place.at.region.clone(),
                    byte_size: place.at.byte_size,
                    size: data.len(),
                });
            }
            if let Some((name, _)) = input.filter(|(_, i)| i.overlaps(place)) {
                return Err(SharedMemoryError::Overlap {
                    output: output.into(),
                    region: place.at.region.clone(),
                    input: name.into(),
                });
            }
        }
        for &(place, _, data) in outputs {
            let (region, at) = (&place.region, &place.at);
            debug_assert!(at.offset + data.len() <= region.map.len());
            // SAFETY: `at.offset + data.len() <= at.offset + at.byte_size
            // <=` the mapping's length (`locate` checked the second, the
            // loop above the first); the mapping is writable (`map_raw` of
            // a file opened read-write) and stays mapped while `region`
            // lives. `data` is the model's output: the server's own bytes,
            // or (the echo model) the request's input, which the loop above
            // found shares no byte of any object with this place — so no
            // byte `data` covers is written, and two places in two mappings
            // of one object are disjoint in memory too. Another request
            // writing or reading the same bytes at once is the client's
            // doing, against the contract (module doc).
            unsafe {
                std::ptr::copy_nonoverlapping(
                    data.as_ptr(),
                    region.map.as_mut_ptr().add(at.offset),
                    data.len(),
                );
            }
        }
        Ok(())
    }
}

/// The user that owns the client's end of the loopback TCP connection
/// from `peer` to `local` (the server's address), from the kernel's socket
/// tables (`/proc/net/tcp`, `/proc/net/tcp6`: a client's socket may be of
/// either family whatever the server's is); `None` if it is not there.
pub fn peer_uid(local: std::net::SocketAddr, peer: std::net::SocketAddr) -> Option<u32> {
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .find_map(|table| {
            let text = std::fs::read_to_string(table).ok()?;
            find_uid(&text, local, peer)
        })
}

fn canonical(a: std::net::SocketAddr) -> std::net::SocketAddr {
    std::net::SocketAddr::new(a.ip().to_canonical(), a.port())
}

/// In a socket table's `text`, the owner of the established socket whose
/// local end is `peer` and remote end `local`: the client's. Only a live,
/// established socket counts (state `01`, an inode): a client that closed
/// at once leaves a time-wait entry that the kernel lists as root's.
fn find_uid(text: &str, local: std::net::SocketAddr, peer: std::net::SocketAddr) -> Option<u32> {
    let (local, peer) = (canonical(local), canonical(peer));
    text.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        // sl local_address rem_address st tx:rx tr:when retrnsmt uid
        // timeout inode …
        let (Some(l), Some(r), Some(st), Some(uid), Some(inode)) =
            (f.get(1), f.get(2), f.get(3), f.get(7), f.get(9))
        else {
            return None;
        };
        let established = *st == "01" && *inode != "0";
        (established && parse_socket(l)? == peer && parse_socket(r)? == local)
            .then(|| uid.parse().ok())?
    })
}

/// An address as `/proc/net/tcp{,6}` prints it: the address's 32-bit
/// words in hex, each as the kernel holds it in memory, then `:` and the
/// port in hex.
fn parse_socket(text: &str) -> Option<std::net::SocketAddr> {
    let (addr, port) = text.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let mut bytes = Vec::with_capacity(16);
    for word in addr.as_bytes().chunks(8) {
        let word = u32::from_str_radix(std::str::from_utf8(word).ok()?, 16).ok()?;
        bytes.extend_from_slice(&word.to_ne_bytes());
    }
    let ip = match bytes.len() {
        4 => std::net::IpAddr::from(<[u8; 4]>::try_from(bytes).ok()?),
        16 => {
            // (an IPv4-mapped address is compared canonical, as IPv4)
            std::net::Ipv6Addr::from(<[u8; 16]>::try_from(bytes).ok()?).to_canonical()
        }
        _ => return None,
    };
    Some(std::net::SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt as _;

    /// A shared-memory object of `size` bytes holding `0, 1, 2, …`,
    /// removed when dropped.
    struct Object {
        key: String,
        path: PathBuf,
    }

    impl Object {
        fn new(tag: &str, size: usize) -> Object {
            let key = format!("/ecomap_test_{}_{tag}", std::process::id());
            let path = object_path(&key).unwrap();
            let bytes: Vec<u8> = (0..size).map(|i| i as u8).collect();
            std::fs::write(&path, bytes).unwrap();
            Object { key, path }
        }

        /// The user owning it: the tests' own.
        fn owner(&self) -> u32 {
            std::fs::metadata(&self.path).unwrap().uid()
        }
    }

    impl Drop for Object {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.path);
        }
    }

    fn at(region: &str, offset: usize, byte_size: usize) -> SharedMemoryRef {
        SharedMemoryRef {
            region: region.into(),
            offset,
            byte_size,
        }
    }

    #[test]
    fn an_output_may_not_overlap_its_input_in_any_region_of_the_object() {
        let object = Object::new("overlap", 1000);
        let me = object.owner();
        let shm = SharedMemory::default();
        shm.register("a", &object.key, 0, 600, me).unwrap();
        shm.register("b", &object.key, 500, 500, me).unwrap();
        let input = shm.locate(&at("a", 100, 450), "x", me).unwrap(); // object 100..550
                                                                      // Same region, overlapping; another region of the same object,
                                                                      // overlapping (b's 0..50 are the object's 500..550).
        for out in [at("a", 500, 10), at("b", 0, 60)] {
            let out = shm.locate(&out, "y", me).unwrap();
            assert!(out.overlaps(&input) && input.overlaps(&out), "{out:?}");
        }
        for out in [at("a", 0, 100), at("b", 50, 100)] {
            let out = shm.locate(&out, "y", me).unwrap();
            assert!(!out.overlaps(&input), "{out:?}");
        }
    }

    #[test]
    fn symlinks_and_other_files_than_regular_ones_are_refused() {
        let object = Object::new("target", 64);
        let me = object.owner();
        let link = format!("ecomap_test_{}_link", std::process::id());
        let link_path = PathBuf::from(SHM_DIR).join(&link);
        let _ = std::fs::remove_file(&link_path);
        std::os::unix::fs::symlink(&object.path, &link_path).unwrap();
        let shm = SharedMemory::default();
        let e = shm
            .register("r", &format!("/{link}"), 0, 8, me)
            .unwrap_err();
        let _ = std::fs::remove_file(&link_path);
        assert!(matches!(e, SharedMemoryError::Open { .. }), "{e}");
        // A FIFO opens (read-write, without blocking) but is no object.
        let fifo = format!("ecomap_test_{}_fifo", std::process::id());
        let fifo_path = PathBuf::from(SHM_DIR).join(&fifo);
        let _ = std::fs::remove_file(&fifo_path);
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo_path)
            .status();
        if made.is_ok_and(|s| s.success()) {
            let e = shm.register("r", &fifo, 0, 8, me).unwrap_err();
            let _ = std::fs::remove_file(&fifo_path);
            assert!(matches!(e, SharedMemoryError::NotAFile { .. }), "{e}");
        }
    }

    #[test]
    fn a_client_uses_only_its_own_users_objects_and_regions() {
        let object = Object::new("owner", 64);
        let owner = object.owner();
        let other = owner.wrapping_add(1).max(1);
        let shm = SharedMemory::default();
        let e = shm.register("r", &object.key, 0, 64, other).unwrap_err();
        assert!(matches!(e, SharedMemoryError::NotYours { .. }), "{e}");
        shm.register("r", &object.key, 0, 64, owner).unwrap();
        // Another user neither sees, uses nor removes it, and has the name
        // free for itself (names are per user).
        assert!(shm.status(None, other).unwrap().is_empty());
        assert!(shm.status(Some("r"), other).is_err());
        let e = shm.locate(&at("r", 0, 8), "input 'x'", other).unwrap_err();
        assert!(matches!(e, SharedMemoryError::Unknown(_)), "{e}");
        shm.unregister(None, other);
        shm.unregister(Some("r"), other);
        assert_eq!(shm.status(None, owner).unwrap().len(), 1);
        // Root may register anyone's object, under names of its own.
        if owner != 0 {
            assert!(shm.status(None, 0).unwrap().is_empty());
        }
        shm.register("r", &object.key, 0, 32, 0).ok();
        shm.unregister(Some("r"), owner);
        assert!(shm.status(None, owner).unwrap().is_empty());
        shm.unregister(None, 0);
    }

    #[test]
    fn a_sparse_object_gets_its_pages_at_registration() {
        let object = Object::new("sparse", 0);
        // As tritonclient creates one: ftruncate only, no page written.
        std::fs::OpenOptions::new()
            .write(true)
            .open(&object.path)
            .unwrap()
            .set_len(1 << 20)
            .unwrap();
        assert_eq!(std::fs::metadata(&object.path).unwrap().blocks(), 0);
        let shm = SharedMemory::default();
        shm.register("r", &object.key, 4096, 65536, object.owner())
            .unwrap();
        let blocks = std::fs::metadata(&object.path).unwrap().blocks();
        assert!(blocks * 512 >= 65536, "{blocks} blocks");
    }

    #[test]
    fn keys_name_objects_in_dev_shm_only() {
        assert_eq!(object_path("/x").unwrap(), PathBuf::from("/dev/shm/x"));
        assert_eq!(object_path("x").unwrap(), PathBuf::from("/dev/shm/x"));
        for bad in ["", "/", "/../etc/passwd", "/a/b", "..", "/.."] {
            let e = object_path(bad).unwrap_err();
            assert!(
                matches!(e, SharedMemoryError::BadKey { .. }),
                "{bad:?}: {e}"
            );
        }
    }

    #[test]
    fn inputs_are_read_where_they_lie_and_outputs_written_in_place() {
        let object = Object::new("rw", 4096);
        let me = object.owner();
        let shm = SharedMemory::default();
        shm.register("r", &object.key, 1024, 2048, me).unwrap();
        // Bytes 1024 + 16 … of the object, without a copy.
        let b = shm.locate(&at("r", 16, 8), "input 'x'", me).unwrap().read();
        assert_eq!(b.as_ref(), &[16, 17, 18, 19, 20, 21, 22, 23]);
        let out = shm.locate(&at("r", 100, 4), "output 'y'", me).unwrap();
        SharedMemory::write_outputs(&[(&out, "y", &[9, 9, 9])], None).unwrap();
        let on_disk = std::fs::read(&object.path).unwrap();
        assert_eq!(&on_disk[1124..1128], &[9, 9, 9, (1127 % 256) as u8]);
        assert_eq!(
            shm.status(None, me).unwrap(),
            vec![RegionStatus {
                name: "r".into(),
                key: object.key.clone(),
                offset: 1024,
                byte_size: 2048
            }]
        );
        // Unregistered while read, or while a resolved place waits to be
        // written: both stay valid until dropped, and a new region of the
        // same name is not the one written.
        shm.unregister(Some("r"), me);
        assert_eq!(b.as_ref()[0], 16);
        let object2 = Object::new("rw2", 64);
        shm.register("r", &object2.key, 0, 64, me).unwrap();
        SharedMemory::write_outputs(&[(&out, "y", &[5])], None).unwrap();
        assert_eq!(std::fs::read(&object.path).unwrap()[1124], 5);
        // An output over the input it was given is refused, not written.
        let input = shm.locate(&at("r", 0, 64), "x", me).unwrap();
        let over = shm.locate(&at("r", 32, 8), "y", me).unwrap();
        let e =
            SharedMemory::write_outputs(&[(&over, "y", &[1; 8])], Some(("x", &input))).unwrap_err();
        assert!(matches!(e, SharedMemoryError::Overlap { .. }), "{e}");
        assert_eq!(std::fs::read(&object2.path).unwrap()[32], 32);
        shm.unregister(None, me);
        assert!(matches!(
            shm.locate(&at("r", 0, 1), "input 'x'", me),
            Err(SharedMemoryError::Unknown(_))
        ));
        assert!(shm.status(None, me).unwrap().is_empty());
    }

    #[test]
    fn places_outside_a_region_or_object_are_refused() {
        let object = Object::new("bounds", 100);
        let me = object.owner();
        let shm = SharedMemory::default();
        for (offset, size) in [(0, 101), (50, 51), (0, 0), (u64::MAX, 2)] {
            let e = shm
                .register("r", &object.key, offset, size, me)
                .unwrap_err();
            assert!(
                matches!(e, SharedMemoryError::OutOfObject { .. }),
                "{offset} {size}: {e}"
            );
        }
        let e = shm
            .register("r", "/ecomap_no_such_object", 0, 1, me)
            .unwrap_err();
        assert!(matches!(e, SharedMemoryError::Open { .. }), "{e}");
        shm.register("r", &object.key, 10, 50, me).unwrap();
        let e = shm.register("r", &object.key, 0, 10, me).unwrap_err();
        assert!(matches!(e, SharedMemoryError::Exists(_)), "{e}");
        let e = shm.locate(&at("r", 45, 6), "input 'x'", me).unwrap_err();
        assert!(e.to_string().contains("run past the 50 bytes"), "{e}");
        let e = shm
            .locate(&at("r", usize::MAX, 2), "output 'y'", me)
            .unwrap_err();
        assert!(matches!(e, SharedMemoryError::OutOfRegion { .. }), "{e}");
        // All or nothing: the first output fits, the second does not, and
        // the first is not written either.
        let before = std::fs::read(&object.path).unwrap();
        let (x, y) = (
            shm.locate(&at("r", 0, 4), "x", me).unwrap(),
            shm.locate(&at("r", 4, 4), "y", me).unwrap(),
        );
        let e = SharedMemory::write_outputs(&[(&x, "x", &[7; 4]), (&y, "y", &[0; 5])], None)
            .unwrap_err();
        assert!(matches!(e, SharedMemoryError::NoRoom { .. }), "{e}");
        assert_eq!(std::fs::read(&object.path).unwrap(), before);
        assert!(shm.status(Some("nope"), me).is_err());
        shm.unregister(None, me);
        assert!(shm.status(None, me).unwrap().is_empty());
    }

    #[test]
    fn the_clients_established_socket_and_no_other_row_gives_the_user() {
        if cfg!(target_endian = "big") {
            return;
        }
        // Server 127.0.0.1:8080 (uid 0), client 127.0.0.1:50000 (uid
        // 1000); a time-wait row of another client, 127.0.0.1:50001,
        // listed as root's with no inode.
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 100 1
   1: 0100007F:1F90 0100007F:C350 01 00000000:00000000 00:00000000 00000000     0        0 101 1
   2: 0100007F:C350 0100007F:1F90 01 00000000:00000000 00:00000000 00000000  1000        0 102 1
   3: 0100007F:C351 0100007F:1F90 06 00000000:00000000 03:00000F9A 00000000     0        0 0 3
";
        let server: std::net::SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let client: std::net::SocketAddr = "127.0.0.1:50000".parse().unwrap();
        assert_eq!(find_uid(table, server, client), Some(1000));
        // The same, seen through a dual-stack listener.
        let mapped = |a: std::net::SocketAddr| match a {
            std::net::SocketAddr::V4(v4) => {
                std::net::SocketAddr::new(v4.ip().to_ipv6_mapped().into(), v4.port())
            }
            v6 => v6,
        };
        assert_eq!(find_uid(table, mapped(server), mapped(client)), Some(1000));
        // Directional: asked the other way round it finds the server's own
        // socket (root's), which is why the first answer above matters.
        assert_eq!(find_uid(table, client, server), Some(0));
        // Not a time-wait row, whoever it names.
        let closed: std::net::SocketAddr = "127.0.0.1:50001".parse().unwrap();
        assert_eq!(find_uid(table, server, closed), None);
    }

    #[test]
    fn the_client_of_a_loopback_connection_is_found_with_its_user() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server_end, peer) = listener.accept().unwrap();
        assert_eq!(peer, client.local_addr().unwrap());
        let me = std::fs::metadata("/proc/self").unwrap().uid();
        assert_eq!(peer_uid(server_end.local_addr().unwrap(), peer), Some(me));
        // A dual-stack listener, an IPv4 client: found all the same (its
        // socket is in /proc/net/tcp, the server's end in tcp6).
        if let Ok(listener) = std::net::TcpListener::bind("[::]:0") {
            let port = listener.local_addr().unwrap().port();
            let _client = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
            let (server_end, peer) = listener.accept().unwrap();
            assert!(peer.is_ipv6(), "{peer}");
            assert_eq!(peer_uid(server_end.local_addr().unwrap(), peer), Some(me));
        }
        // An address with no such connection: nobody.
        let nobody: std::net::SocketAddr = "127.0.0.1:1".parse().unwrap();
        assert_eq!(peer_uid(server_end.local_addr().unwrap(), nobody), None);
        // The tables' text: 127.0.0.1:8080 as the kernel prints it on a
        // little-endian host, and ::1 port 80.
        if cfg!(target_endian = "little") {
            assert_eq!(
                parse_socket("0100007F:1F90"),
                Some("127.0.0.1:8080".parse().unwrap())
            );
            assert_eq!(
                parse_socket("00000000000000000000000001000000:0050"),
                Some("[::1]:80".parse().unwrap())
            );
        }
    }
}
