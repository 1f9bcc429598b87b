//! Fleet-wide send rate limiting in Redis (being written).
