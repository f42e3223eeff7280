//! The traffic plane: a TCP proxy that forwards to the current primary (and closes
//! connections to a fenced one) and a read port that balances over healthy standbys.
//!
//! It forwards bytes; it must never parse, log or keep what flows through it.
