//! alm-mio (being written).
pub mod config;
pub mod control;
