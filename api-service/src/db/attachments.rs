//! `attachments` (being written).
