//! ovasabi-middleware
