//! The benchmark's error type: the suite's [`Failure`](crate::check::Failure), a sentence
//! saying what broke and where (with the whole chain of a reqwest error). Scenarios record
//! these in their report instead of panicking.

pub use crate::check::Failure as BenchError;
