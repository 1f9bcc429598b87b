//! `reactions` (being written).
