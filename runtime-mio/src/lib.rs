//! alm-mio: the real node. A single-threaded mio event loop ([`event_loop`])
//! drives the sans-IO engine of `alm-core` over a UDP socket (Datagram
//! channel), TCP connections ([`stream`], Stream channel), the TAP device of
//! `alm-tap` and a Unix control socket ([`control`]); [`config`] turns the
//! command line into a [`config::RunConfig`]. The `almd` binary is `main.rs`.
pub mod config;
pub mod control;
pub mod engine;
pub mod event_loop;
pub mod status;
pub mod stream;
pub mod sys;
