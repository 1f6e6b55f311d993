//! IGMP querier for the TAP link (placeholder, being written).
