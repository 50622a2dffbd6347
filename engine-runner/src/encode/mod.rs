//! Output encoders shared by every engine that produces images or video.

pub mod image;
pub mod video;
