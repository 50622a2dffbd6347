//! NVIDIA through NVML, the driver's management library, opened at run
//! time: `studio-worker` links nothing of NVIDIA's and starts on hosts
//! without the driver (then this source is unavailable and the next one
//! is asked).

use std::ffi::{c_char, c_int, c_uint, c_ulonglong, c_void, CStr};

use super::{Gpu, ProbeError, Vendor};

const SOURCE: &str = "nvml";

/// Where the driver installs it (the soname first, then the unversioned
/// name some containers have).
const LIBRARIES: [&str; 2] = ["libnvidia-ml.so.1", "libnvidia-ml.so"];

/// `nvmlReturn_t`: 0 is success.
type NvmlReturn = c_int;
/// `nvmlDevice_t`: an opaque handle.
type Device = *mut c_void;

/// `nvmlMemory_t`, in bytes.
#[repr(C)]
#[derive(Default)]
struct Memory {
    total: c_ulonglong,
    free: c_ulonglong,
    used: c_ulonglong,
}

/// `NVML_DEVICE_NAME_V2_BUFFER_SIZE`.
const NAME_LEN: usize = 96;

/// The entry points used, resolved from the opened library. The library
/// outlives them (it is dropped last, in [`probe`]).
struct Api {
    init: unsafe extern "C" fn() -> NvmlReturn,
    shutdown: unsafe extern "C" fn() -> NvmlReturn,
    count: unsafe extern "C" fn(*mut c_uint) -> NvmlReturn,
    handle: unsafe extern "C" fn(c_uint, *mut Device) -> NvmlReturn,
    memory: unsafe extern "C" fn(Device, *mut Memory) -> NvmlReturn,
    name: unsafe extern "C" fn(Device, *mut c_char, c_uint) -> NvmlReturn,
    error: unsafe extern "C" fn(NvmlReturn) -> *const c_char,
}

impl Api {
    /// Resolves every symbol, or says which one is missing.
    ///
    /// # Safety
    /// `lib` must be NVML; the types above are those of `nvml.h`.
    unsafe fn resolve(lib: &libloading::Library) -> Result<Self, ProbeError> {
        macro_rules! sym {
            ($name:literal) => {
                // SAFETY: the caller vouches that `lib` is NVML, whose
                // symbol has this signature in nvml.h.
                *unsafe { lib.get($name) }.map_err(|e| {
                    ProbeError::Unavailable(
                        SOURCE,
                        format!("{}: {e}", String::from_utf8_lossy($name)),
                    )
                })?
            };
        }
        Ok(Self {
            init: sym!(b"nvmlInit_v2"),
            shutdown: sym!(b"nvmlShutdown"),
            count: sym!(b"nvmlDeviceGetCount_v2"),
            handle: sym!(b"nvmlDeviceGetHandleByIndex_v2"),
            memory: sym!(b"nvmlDeviceGetMemoryInfo"),
            name: sym!(b"nvmlDeviceGetName"),
            error: sym!(b"nvmlErrorString"),
        })
    }

    /// `Err` naming the call and NVML's own words for `rc`, unless 0.
    fn check(&self, call: &str, rc: NvmlReturn) -> Result<(), String> {
        if rc == 0 {
            return Ok(());
        }
        // SAFETY: nvmlErrorString returns a static string (or null).
        let text = unsafe { (self.error)(rc) };
        let words = if text.is_null() {
            format!("error {rc}")
        } else {
            // SAFETY: non-null, NUL-terminated, static in the library.
            unsafe { CStr::from_ptr(text) }
                .to_string_lossy()
                .into_owned()
        };
        Err(format!("{call}: {words}"))
    }

    /// Every device's name and memory, in NVML's index order.
    fn devices(&self) -> Result<Vec<Gpu>, String> {
        let mut n: c_uint = 0;
        // SAFETY: a valid out-pointer to a c_uint.
        self.check("nvmlDeviceGetCount_v2", unsafe { (self.count)(&mut n) })?;
        let mut gpus = Vec::new();
        for i in 0..n {
            let mut dev: Device = std::ptr::null_mut();
            // SAFETY: i < count; a valid out-pointer for the handle.
            if let Err(e) = self.check("nvmlDeviceGetHandleByIndex_v2", unsafe {
                (self.handle)(i, &mut dev)
            }) {
                // A GPU NVML cannot open (lost, no permission) is left out;
                // the others are still usable.
                tracing::warn!(target: "gpu", "nvml: GPU {i} left out: {e}");
                continue;
            }
            let mut mem = Memory::default();
            // SAFETY: `dev` came from NVML; a valid out-pointer.
            self.check("nvmlDeviceGetMemoryInfo", unsafe {
                (self.memory)(dev, &mut mem)
            })?;
            let mut buf = [0 as c_char; NAME_LEN];
            // SAFETY: `buf` holds NAME_LEN bytes, as passed.
            let named = unsafe { (self.name)(dev, buf.as_mut_ptr(), NAME_LEN as c_uint) } == 0;
            let name = if named {
                // SAFETY: NVML NUL-terminates within the length given.
                unsafe { CStr::from_ptr(buf.as_ptr()) }
                    .to_string_lossy()
                    .into_owned()
            } else {
                format!("NVIDIA GPU {i}")
            };
            gpus.push(Gpu {
                index: i,
                name,
                vendor: Vendor::Nvidia,
                total_bytes: mem.total,
                free_bytes: Some(mem.free),
            });
        }
        Ok(gpus)
    }
}

/// Opens NVML, lists the GPUs, shuts NVML down again.
pub fn probe() -> Result<Vec<Gpu>, ProbeError> {
    let mut tried = Vec::new();
    let lib = LIBRARIES.iter().find_map(|name| {
        // SAFETY: loading the NVIDIA driver's library runs its
        // initialisers, which are safe to run; nothing else is loaded.
        match unsafe { libloading::Library::new(name) } {
            Ok(lib) => Some(lib),
            Err(e) => {
                tried.push(e.to_string());
                None
            }
        }
    });
    let Some(lib) = lib else {
        return Err(ProbeError::Unavailable(SOURCE, tried.join("; ")));
    };
    // SAFETY: `lib` is NVML (opened by its name above).
    let api = unsafe { Api::resolve(&lib) }?;
    // SAFETY: nvmlInit_v2 takes no arguments.
    api.check("nvmlInit_v2", unsafe { (api.init)() })
        .map_err(|e| ProbeError::Unavailable(SOURCE, e))?;
    let gpus = api.devices();
    // SAFETY: balanced with the successful init above.
    let _ = unsafe { (api.shutdown)() };
    // The entry points in `api` are plain function pointers into `lib`:
    // none is called after this.
    drop(lib);
    gpus.map_err(|e| ProbeError::Unreadable(SOURCE, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// On a host without the NVIDIA driver (this project's CI) NVML is
    /// unavailable, which sends the probe on to the next source; it must
    /// not fail or crash.
    #[test]
    fn without_the_driver_nvml_is_unavailable() {
        if crate::platform::nvidia_driver_loaded() {
            return; // A GPU host: covered by the device check instead.
        }
        match probe() {
            Err(ProbeError::Unavailable(_, why)) => assert!(why.contains("libnvidia-ml"), "{why}"),
            other => panic!("{other:?}"),
        }
    }
}
