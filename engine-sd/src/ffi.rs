//! The thin unsafe layer over stable-diffusion.cpp's C API: callbacks,
//! a context handle that frees itself, images in and out.
//!
//! SAFETY CONTRACT: sd.cpp's progress/log/preview callbacks are process
//! globals. Only the engine thread calls into sd.cpp, one job at a time;
//! the progress callback's data pointer is set right before
//! `generate_image` and cleared right after, so it never outlives the
//! reporter it points to.

use std::collections::VecDeque;
use std::ffi::{c_char, c_int, c_void, CStr};
use std::io::Write;
use std::sync::Mutex;

use diffusion_rs_sys as sys;
use engine_runner::encode::video::AudioTrack;

/// The last error lines sd.cpp logged (for failure messages).
static LAST_ERRORS: Mutex<VecDeque<String>> = Mutex::new(VecDeque::new());

unsafe extern "C" fn on_log(level: sys::sd_log_level_t, text: *const c_char, _data: *mut c_void) {
    if text.is_null() {
        return;
    }
    // SAFETY: sd.cpp passes a NUL-terminated string valid for this call.
    let line = unsafe { CStr::from_ptr(text) }.to_string_lossy();
    let line = line.trim_end();
    let tag = match level {
        sys::sd_log_level_t::SD_LOG_DEBUG => return,
        sys::sd_log_level_t::SD_LOG_INFO => "info",
        sys::sd_log_level_t::SD_LOG_WARN => "warn",
        _ => "error",
    };
    if tag == "error" {
        if let Ok(mut q) = LAST_ERRORS.lock() {
            if q.len() == 8 {
                q.pop_front();
            }
            q.push_back(line.to_string());
        }
    }
    // stderr is drained by the supervisor into its log.
    let _ = writeln!(std::io::stderr().lock(), "sd-cpp {tag}: {line}");
}

unsafe extern "C" fn on_preview(
    _step: c_int,
    _frames: c_int,
    _images: *mut sys::sd_image_t,
    _noisy: bool,
    _data: *mut c_void,
) {
}

/// Registers the log and preview callbacks (once, before any model loads).
/// Without them sd.cpp prints progress bars and logs to stdout.
pub fn install_callbacks() {
    // SAFETY: registering functions with 'static lifetime and no data.
    unsafe {
        sys::sd_set_log_callback(Some(on_log), std::ptr::null_mut());
        sys::sd_set_preview_callback(
            Some(on_preview),
            sys::preview_t::PREVIEW_NONE,
            0,
            false,
            false,
            std::ptr::null_mut(),
        );
        sys::sd_set_progress_callback(None, std::ptr::null_mut());
    }
}

/// Takes the error lines logged since the last call.
pub fn take_errors() -> Vec<String> {
    LAST_ERRORS
        .lock()
        .map(|mut q| q.drain(..).collect())
        .unwrap_or_default()
}

/// What the progress callback calls.
pub type ProgressFn<'a> = dyn FnMut(u64, u64) + 'a;

unsafe extern "C" fn on_progress(step: c_int, steps: c_int, _time: f32, data: *mut c_void) {
    if data.is_null() {
        return;
    }
    // SAFETY: `data` points at the `&mut ProgressFn` set by `with_progress`,
    // alive for the whole call of `f` there, on this same thread.
    let f = unsafe { &mut *(data as *mut &mut ProgressFn<'_>) };
    f(step.max(0) as u64, steps.max(0) as u64);
}

/// Runs `f` with sd.cpp's progress callback routed to `progress`.
pub fn with_progress<R>(progress: &mut ProgressFn<'_>, f: impl FnOnce() -> R) -> R {
    let mut slot: &mut ProgressFn<'_> = progress;
    let data = &mut slot as *mut &mut ProgressFn<'_> as *mut c_void;
    // SAFETY: see the module contract; cleared before `slot` goes away.
    unsafe { sys::sd_set_progress_callback(Some(on_progress), data) };
    let out = f();
    // SAFETY: as above.
    unsafe { sys::sd_set_progress_callback(None, std::ptr::null_mut()) };
    out
}

/// An owned sd.cpp context.
pub struct Ctx(*mut sys::sd_ctx_t);

// SAFETY: the context is only ever used from the engine thread that owns
// the `SdCpp` engine; it is moved there once, never shared.
unsafe impl Send for Ctx {}

impl Ctx {
    /// Wraps a non-null context.
    pub fn new(ptr: *mut sys::sd_ctx_t) -> Option<Self> {
        (!ptr.is_null()).then_some(Self(ptr))
    }

    /// The raw pointer, for calls.
    pub fn raw(&self) -> *mut sys::sd_ctx_t {
        self.0
    }
}

impl Drop for Ctx {
    fn drop(&mut self) {
        // SAFETY: created by new_sd_ctx, freed exactly once.
        unsafe { sys::free_sd_ctx(self.0) };
    }
}

/// An image handed to sd.cpp; the pixels stay owned by Rust.
pub struct InImage {
    pixels: Vec<u8>,
    width: u32,
    height: u32,
    channel: u32,
}

impl InImage {
    /// RGB8 pixels.
    pub fn rgb(img: image::RgbImage) -> Self {
        let (width, height) = img.dimensions();
        Self {
            pixels: img.into_raw(),
            width,
            height,
            channel: 3,
        }
    }

    /// 8-bit single-channel pixels (masks).
    pub fn luma(img: image::GrayImage) -> Self {
        let (width, height) = img.dimensions();
        Self {
            pixels: img.into_raw(),
            width,
            height,
            channel: 1,
        }
    }

    /// The C view (valid while `self` lives and is not moved).
    pub fn view(&mut self) -> sys::sd_image_t {
        sys::sd_image_t {
            width: self.width,
            height: self.height,
            channel: self.channel,
            data: self.pixels.as_mut_ptr(),
        }
    }
}

/// Copies one sd.cpp image into an RGB buffer (alpha dropped).
///
/// # Safety
/// `img.data` must be null or point to width × height × channel bytes.
unsafe fn copy_rgb(img: &sys::sd_image_t) -> Option<image::RgbImage> {
    if img.data.is_null() || img.channel < 3 {
        return None;
    }
    let len = img.width as usize * img.height as usize * img.channel as usize;
    // SAFETY: the caller guarantees the buffer's length.
    let bytes = unsafe { std::slice::from_raw_parts(img.data, len) };
    let rgb: Vec<u8> = if img.channel == 3 {
        bytes.to_vec()
    } else {
        bytes
            .chunks_exact(img.channel as usize)
            .flat_map(|p| [p[0], p[1], p[2]])
            .collect()
    };
    image::RgbImage::from_raw(img.width, img.height, rgb)
}

/// Copies and frees the first image of a `generate_image` result.
///
/// # Safety
/// `ptr` must come from `generate_image` with `batch_count` 1.
pub unsafe fn take_image(ptr: *mut sys::sd_image_t) -> Option<image::RgbImage> {
    // SAFETY: one image, both buffers malloc'ed by sd.cpp.
    unsafe { take_frames(ptr, 1).into_iter().next().flatten() }
}

/// Copies and frees the frames of a `generate_video` result; a frame sd.cpp
/// left empty is `None`.
///
/// # Safety
/// `ptr` must be null or come from `generate_video` with `n` frames.
pub unsafe fn take_frames(ptr: *mut sys::sd_image_t, n: usize) -> Vec<Option<image::RgbImage>> {
    if ptr.is_null() {
        return Vec::new();
    }
    // SAFETY: the caller passes sd.cpp's array of `n` images, which
    // free_sd_images releases (each buffer, then the array).
    unsafe {
        let frames = std::slice::from_raw_parts(ptr, n);
        let out = frames.iter().map(|f| copy_rgb(f)).collect();
        sys::free_sd_images(ptr, n as c_int);
        out
    }
}

/// Copies and frees the audio track of a `generate_video` result.
///
/// # Safety
/// `ptr` must be null or come from `generate_video`'s `audio_out`.
pub unsafe fn take_audio(ptr: *mut sys::sd_audio_t) -> Option<AudioTrack> {
    if ptr.is_null() {
        return None;
    }
    // SAFETY: sd.cpp's audio holds sample_count × channels floats.
    unsafe {
        let a = &*ptr;
        let track = if a.data.is_null()
            || a.sample_rate == 0
            || a.channels == 0
            || a.channels > u16::MAX as u32
        {
            None
        } else {
            let len = a.sample_count as usize * a.channels as usize;
            Some(AudioTrack {
                sample_rate: a.sample_rate,
                channels: a.channels as u16,
                samples: std::slice::from_raw_parts(a.data, len).to_vec(),
            })
        };
        sys::free_sd_audio(ptr);
        track
    }
}
