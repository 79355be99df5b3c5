//! What a person sees while envbuild works: progress on stderr (live lines on a terminal, plain
//! lines otherwise) and warnings.

mod progress;

pub use progress::Progress;
