//! alm-sim (being written).
