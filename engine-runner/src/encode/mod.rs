//! Output encoders shared by every engine that produces images, video or
//! audio, and the rule for the programs they run.

pub mod audio;
pub mod image;
pub mod video;

pub use crate::platform::die_with_runner;
