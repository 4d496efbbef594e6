//! Triton's system shared-memory extension: regions a client on the same
//! host creates (POSIX shared memory, `shm_open`) and registers with the
//! server, so an input is read, and an output written, where it lies
//! instead of travelling in the HTTP body. For a 602 kB camera frame the
//! body's trip through the loopback is most of what the HTTP path adds
//! over the in-process API (docs/results.md §9.1); a shared-memory input
//! is read by the model where the client wrote it, with no copy at all.
//!
//! Off unless `ecomap serve --allow-client-shm` (as Triton's
//! `--allow-client-shm`): a registered region is memory the client keeps
//! writing to, and a client that shrinks the object under a registered
//! region makes the server's next read of it fault (SIGBUS) — only a
//! trusted local client may use it.
//!
//! The contract, Triton's: the client does not write a region while a
//! request that reads it, or will write an output into it, is in flight.
//! A region unregistered while a request still reads it stays mapped
//! until that request is done.

use crate::server::protocol::SharedMemoryRef;
use bytes::Bytes;
use memmap2::{MmapOptions, MmapRaw};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// Where `shm_open` keeps its objects on Linux.
const SHM_DIR: &str = "/dev/shm";

/// The most regions registered at once: each is a mapping held in the
/// server's address space for as long as it is registered.
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
    /// No region of that name is registered.
    #[error("no shared-memory region '{0}' is registered")]
    Unknown(String),
    /// Too many regions are registered.
    #[error("{MAX_REGIONS} regions are registered already; unregister some first")]
    TooMany,
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
    map: MmapRaw,
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

/// The registered regions, by name.
#[derive(Debug, Default)]
pub struct SharedMemory {
    regions: Mutex<BTreeMap<String, Arc<Region>>>,
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
        // SAFETY: `start + len` lies within the mapping (checked in `read`
        // before this is built), which stays mapped while `self.region`
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
    /// region `name`.
    pub fn register(
        &self,
        name: &str,
        key: &str,
        offset: u64,
        byte_size: u64,
    ) -> Result<(), SharedMemoryError> {
        let path = object_path(key)?;
        let open = |source| SharedMemoryError::Open {
            key: key.into(),
            path: path.clone(),
            source,
        };
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(open)?;
        let size = file.metadata().map_err(open)?.len();
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
        let mut regions = self.regions.lock().unwrap_or_else(|p| p.into_inner());
        if regions.contains_key(name) {
            return Err(SharedMemoryError::Exists(name.into()));
        }
        if regions.len() >= MAX_REGIONS {
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
            name.into(),
            Arc::new(Region {
                key: key.into(),
                offset,
                map,
            }),
        );
        Ok(())
    }

    /// Unregister region `name`, or every region; a name not registered is
    /// not an error (there is nothing to undo), as with Triton.
    pub fn unregister(&self, name: Option<&str>) {
        let mut regions = self.regions.lock().unwrap_or_else(|p| p.into_inner());
        match name {
            Some(n) => {
                regions.remove(n);
            }
            None => regions.clear(),
        }
    }

    /// The registered regions (one, if `name` is given).
    pub fn status(&self, name: Option<&str>) -> Result<Vec<RegionStatus>, SharedMemoryError> {
        let regions = self.regions.lock().unwrap_or_else(|p| p.into_inner());
        let row = |(n, r): (&String, &Arc<Region>)| RegionStatus {
            name: n.clone(),
            key: r.key.clone(),
            offset: r.offset,
            byte_size: r.map.len() as u64,
        };
        match name {
            None => Ok(regions.iter().map(row).collect()),
            Some(n) => regions
                .get_key_value(n)
                .map(|kv| vec![row(kv)])
                .ok_or_else(|| SharedMemoryError::Unknown(n.into())),
        }
    }

    fn place(&self, at: &SharedMemoryRef, tensor: &str) -> Result<Arc<Region>, SharedMemoryError> {
        let region = self
            .regions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&at.region)
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
        Ok(region)
    }

    /// The bytes at `at`, read where they lie: no copy, and the region
    /// stays mapped while they are held. `tensor` names them in errors.
    pub fn read(&self, at: &SharedMemoryRef, tensor: &str) -> Result<Bytes, SharedMemoryError> {
        let region = self.place(at, tensor)?;
        Ok(Bytes::from_owner(RegionBytes {
            region,
            start: at.offset,
            len: at.byte_size,
        }))
    }

    /// Check that `at` names room in a registered region (before the
    /// request is submitted, so a wrong place costs no forward pass).
    pub fn check(&self, at: &SharedMemoryRef, tensor: &str) -> Result<(), SharedMemoryError> {
        self.place(at, tensor).map(drop)
    }

    /// Write output `output`'s bytes at `at`.
    pub fn write(
        &self,
        at: &SharedMemoryRef,
        output: &str,
        data: &[u8],
    ) -> Result<(), SharedMemoryError> {
        let region = self.place(at, &format!("output '{output}'"))?;
        if data.len() > at.byte_size {
            return Err(SharedMemoryError::NoRoom {
                output: output.into(),
                region: at.region.clone(),
                byte_size: at.byte_size,
                size: data.len(),
            });
        }
        // SAFETY: `at.offset + data.len() <= at.offset + at.byte_size <=`
        // the mapping's length (`place` checked it, and the room above), the
        // mapping is writable (`map_raw` of a file opened read-write) and
        // stays mapped while `region` lives; `data` is the server's own
        // memory, so the two do not overlap. Other requests writing the
        // same bytes at once is the client's doing, against the contract.
        unsafe {
            std::ptr::copy_nonoverlapping(
                data.as_ptr(),
                region.map.as_mut_ptr().add(at.offset),
                data.len(),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let shm = SharedMemory::default();
        shm.register("r", &object.key, 1024, 2048).unwrap();
        // Bytes 1024 + 16 … of the object, without a copy.
        let b = shm.read(&at("r", 16, 8), "input 'x'").unwrap();
        assert_eq!(b.as_ref(), &[16, 17, 18, 19, 20, 21, 22, 23]);
        shm.write(&at("r", 100, 4), "y", &[9, 9, 9]).unwrap();
        let on_disk = std::fs::read(&object.path).unwrap();
        assert_eq!(&on_disk[1124..1128], &[9, 9, 9, (1127 % 256) as u8]);
        assert_eq!(
            shm.status(None).unwrap(),
            vec![RegionStatus {
                name: "r".into(),
                key: object.key.clone(),
                offset: 1024,
                byte_size: 2048
            }]
        );
        // Unregistered while read: the bytes stay valid until dropped.
        shm.unregister(Some("r"));
        assert_eq!(b.as_ref()[0], 16);
        assert!(matches!(
            shm.read(&at("r", 0, 1), "input 'x'"),
            Err(SharedMemoryError::Unknown(_))
        ));
        assert!(shm.status(None).unwrap().is_empty());
    }

    #[test]
    fn places_outside_a_region_or_object_are_refused() {
        let object = Object::new("bounds", 100);
        let shm = SharedMemory::default();
        for (offset, size) in [(0, 101), (50, 51), (0, 0), (u64::MAX, 2)] {
            let e = shm.register("r", &object.key, offset, size).unwrap_err();
            assert!(
                matches!(e, SharedMemoryError::OutOfObject { .. }),
                "{offset} {size}: {e}"
            );
        }
        let e = shm
            .register("r", "/ecomap_no_such_object", 0, 1)
            .unwrap_err();
        assert!(matches!(e, SharedMemoryError::Open { .. }), "{e}");
        shm.register("r", &object.key, 10, 50).unwrap();
        let e = shm.register("r", &object.key, 0, 10).unwrap_err();
        assert!(matches!(e, SharedMemoryError::Exists(_)), "{e}");
        let e = shm.read(&at("r", 45, 6), "input 'x'").unwrap_err();
        assert!(e.to_string().contains("run past the 50 bytes"), "{e}");
        let e = shm
            .check(&at("r", usize::MAX, 2), "output 'y'")
            .unwrap_err();
        assert!(matches!(e, SharedMemoryError::OutOfRegion { .. }), "{e}");
        let e = shm.write(&at("r", 0, 4), "y", &[0; 5]).unwrap_err();
        assert!(matches!(e, SharedMemoryError::NoRoom { .. }), "{e}");
        assert!(shm.status(Some("nope")).is_err());
        shm.unregister(None);
        assert!(shm.status(None).unwrap().is_empty());
    }
}
