//! Crashes, restarts, outages and hostile input lose nothing.
