//! `receipts` (being written).
