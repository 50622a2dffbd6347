//! The model cache: `modelSource.files` fetched into
//! `<models_root>/<engine>/<model>/`, verified, resumable, one download per
//! file across every process on the host.

mod download;
mod lock;
pub mod named;

pub use download::{DownloadProgress, ModelCache};
