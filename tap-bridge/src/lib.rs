//! alm-tap (being written).
