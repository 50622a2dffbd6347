//! The desktop window's model, free of any GUI crate: a blocking client of
//! the running worker's control endpoint ([`client`]), what the window and
//! the tray show derived from the worker's snapshot ([`state`]), the log
//! filter ([`logs`]) and the config form's groups ([`form`]). The window
//! itself (`eframe`) and the tray (`tray-icon`) are behind the `ui`
//! feature and only draw what these modules decide, so everything here is
//! tested without a display.

pub mod client;
pub mod form;
pub mod launch;
pub mod logs;
pub mod state;

#[cfg(feature = "ui")]
pub mod app;
