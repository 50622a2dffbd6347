//! `studio-worker`, the supervisor, as a library: the binary
//! (`main.rs`) parses the command line and calls [`commands::dispatch`];
//! the same core serves `run`, `job` and what comes later (a local API, a
//! desktop window).

pub mod breakers;
pub mod capabilities;
pub mod cli;
pub mod commands;
pub mod config;
pub mod control;
pub mod deliver;
pub mod failure;
pub mod fetch;
pub mod gpu;
pub mod jobs;
pub mod local_api;
pub mod local_job;
pub mod logging;
pub mod logship;
pub mod models;
pub mod platform;
pub mod progress;
pub mod register;
pub mod report;
pub mod runner;
pub mod scheduler;
pub mod service;
pub mod session;
pub mod settings;
pub mod state;
pub mod sysinfo;
pub mod update;
