//! ovasabi-embedded
