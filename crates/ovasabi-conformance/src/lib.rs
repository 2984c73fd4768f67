//! ovasabi-conformance
