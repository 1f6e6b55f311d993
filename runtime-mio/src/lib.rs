//! alm-mio (being written).
