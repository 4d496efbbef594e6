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
//! server refuses every shared-memory request from another address). A
//! key names a regular file in /dev/shm itself: no symlink is followed, so
//! a registration cannot map another file the server may write. The
//! region's pages are allocated when it is registered, so a full /dev/shm
//! is a refused registration rather than a fault later; but a client that
//! shrinks the object under a registered region makes the server's next
//! access fault (SIGBUS) and the server dies — only a trusted local client
//! may use it.
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
    #[error("key {key:?}: {path} is not a regular file (a symlink, a directory or a device)")]
    NotAFile {
        /// The key given.
        key: String,
        /// The file it names.
        path: PathBuf,
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

impl Region {
    /// The object's bytes a place in this region covers.
    fn object_range(&self, at: &SharedMemoryRef) -> std::ops::Range<u64> {
        let start = self.offset + at.offset as u64;
        start..start + at.byte_size as u64
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
        // SAFETY: `fallocate` only reads its integer arguments; the fd is
        // open for the duration of the call (`file` lives to the end of
        // this function).
        let rc =
            unsafe { libc::fallocate(std::os::fd::AsRawFd::as_raw_fd(&file), 0, start, length) };
        if rc != 0 {
            return Err(SharedMemoryError::NoSpace {
                key: key.into(),
                byte_size,
                source: std::io::Error::last_os_error(),
            });
        }
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
                object: (meta.dev(), meta.ino()),
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

    /// Check an output's place before the request is submitted (a wrong
    /// one then costs no forward pass): room in a registered region, not
    /// overlapping its request's input `input` (name and place) if that
    /// is in shared memory too.
    pub fn check_output(
        &self,
        at: &SharedMemoryRef,
        output: &str,
        input: Option<(&str, &SharedMemoryRef)>,
    ) -> Result<(), SharedMemoryError> {
        let region = self.place(at, &format!("output '{output}'"))?;
        let Some((name, input_at)) = input else {
            return Ok(());
        };
        let input_region = self.place(input_at, &format!("input '{name}'"))?;
        let (a, b) = (region.object_range(at), input_region.object_range(input_at));
        if region.object == input_region.object && a.start < b.end && b.start < a.end {
            return Err(SharedMemoryError::Overlap {
                output: output.into(),
                region: at.region.clone(),
                input: name.into(),
            });
        }
        Ok(())
    }

    /// Write each output's bytes at its place: every place and room is
    /// checked first, so either all are written or none (a client told
    /// "400" finds no region overwritten).
    pub fn write_outputs(
        &self,
        outputs: &[(&SharedMemoryRef, &str, &[u8])],
    ) -> Result<(), SharedMemoryError> {
        let mut places = Vec::with_capacity(outputs.len());
        for &(at, output, data) in outputs {
            let region = self.place(at, &format!("output '{output}'"))?;
            if data.len() > at.byte_size {
                return Err(SharedMemoryError::NoRoom {
                    output: output.into(),
                    region: at.region.clone(),
                    byte_size: at.byte_size,
                    size: data.len(),
                });
            }
            places.push(region);
        }
        for (&(at, _, data), region) in outputs.iter().zip(&places) {
            debug_assert!(at.offset + data.len() <= region.map.len());
            // SAFETY: `at.offset + data.len() <= at.offset + at.byte_size
            // <=` the mapping's length (`place` checked the second, the
            // loop above the first); the mapping is writable (`map_raw` of
            // a file opened read-write) and stays mapped while `region`
            // lives. `data` is the model's output: never the request's own
            // input place (`check_output` refused an overlap before
            // submission), and `ptr::copy` allows overlap all the same.
            // Another request writing the same bytes at once is the
            // client's doing, against the contract (module doc).
            unsafe {
                std::ptr::copy(
                    data.as_ptr(),
                    region.map.as_mut_ptr().add(at.offset),
                    data.len(),
                );
            }
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
    fn an_output_may_not_overlap_its_input_in_any_region_of_the_object() {
        let object = Object::new("overlap", 1000);
        let shm = SharedMemory::default();
        shm.register("a", &object.key, 0, 600).unwrap();
        shm.register("b", &object.key, 500, 500).unwrap();
        let input = at("a", 100, 450); // object bytes 100..550
        let x = Some(("x", &input));
        // Same region, overlapping; another region of the same object,
        // overlapping (b's 0..50 are the object's 500..550).
        for out in [at("a", 500, 10), at("b", 0, 60)] {
            let e = shm.check_output(&out, "y", x).unwrap_err();
            assert!(
                matches!(e, SharedMemoryError::Overlap { .. }),
                "{out:?}: {e}"
            );
        }
        for out in [at("a", 0, 100), at("b", 50, 100)] {
            shm.check_output(&out, "y", x).unwrap();
        }
    }

    #[test]
    fn symlinks_and_other_files_than_regular_ones_are_refused() {
        let object = Object::new("target", 64);
        let link = format!("ecomap_test_{}_link", std::process::id());
        let link_path = PathBuf::from(SHM_DIR).join(&link);
        let _ = std::fs::remove_file(&link_path);
        std::os::unix::fs::symlink(&object.path, &link_path).unwrap();
        let shm = SharedMemory::default();
        let e = shm.register("r", &format!("/{link}"), 0, 8).unwrap_err();
        let _ = std::fs::remove_file(&link_path);
        assert!(matches!(e, SharedMemoryError::Open { .. }), "{e}");
        let dir = format!("ecomap_test_{}_dir", std::process::id());
        let dir_path = PathBuf::from(SHM_DIR).join(&dir);
        std::fs::create_dir_all(&dir_path).unwrap();
        let e = shm.register("r", &dir, 0, 8).unwrap_err();
        let _ = std::fs::remove_dir(&dir_path);
        assert!(
            matches!(
                e,
                SharedMemoryError::Open { .. } | SharedMemoryError::NotAFile { .. }
            ),
            "{e}"
        );
    }

    #[test]
    fn a_sparse_object_gets_its_pages_at_registration() {
        use std::os::unix::fs::MetadataExt as _;
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
        shm.register("r", &object.key, 4096, 65536).unwrap();
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
        let shm = SharedMemory::default();
        shm.register("r", &object.key, 1024, 2048).unwrap();
        // Bytes 1024 + 16 … of the object, without a copy.
        let b = shm.read(&at("r", 16, 8), "input 'x'").unwrap();
        assert_eq!(b.as_ref(), &[16, 17, 18, 19, 20, 21, 22, 23]);
        shm.write_outputs(&[(&at("r", 100, 4), "y", &[9, 9, 9])])
            .unwrap();
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
            .check_output(&at("r", usize::MAX, 2), "y", None)
            .unwrap_err();
        assert!(matches!(e, SharedMemoryError::OutOfRegion { .. }), "{e}");
        // All or nothing: the first output fits, the second does not, and
        // the first is not written either.
        let before = std::fs::read(&object.path).unwrap();
        let e = shm
            .write_outputs(&[
                (&at("r", 0, 4), "x", &[7; 4]),
                (&at("r", 4, 4), "y", &[0; 5]),
            ])
            .unwrap_err();
        assert!(matches!(e, SharedMemoryError::NoRoom { .. }), "{e}");
        assert_eq!(std::fs::read(&object.path).unwrap(), before);
        assert!(shm.status(Some("nope")).is_err());
        shm.unregister(None);
        assert!(shm.status(None).unwrap().is_empty());
    }
}
