//! Event formats: structured JSON mode and binary modes.
