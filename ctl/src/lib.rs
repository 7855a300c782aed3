//! The library half of the `mailpipe` CLI: the readers of operator input
//! that are plain functions of their bytes, so that the fuzz targets (and
//! unit tests) call the code the subcommands run. The subcommands
//! themselves are in the binary (`main.rs`).

pub mod recipients;
