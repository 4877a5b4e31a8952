//! The canary engine. Pure: no async, no I/O, no clock (time is an argument).
