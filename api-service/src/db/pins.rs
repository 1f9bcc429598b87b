//! `pins` (being written).
