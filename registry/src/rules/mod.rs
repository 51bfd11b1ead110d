//! Pure deciders: no I/O, no clock of their own. Given records, they say what a rule
//! means for them (a tag may not move, an image expires by rule 2, a template applies), so
//! every adapter and every preview gets the same answer as the run that acts on it.

pub mod lifecycle;
pub mod mutability;
pub mod templates;
pub mod wildcard;
