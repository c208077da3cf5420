//! Drivers run the sans-IO core against the world: they own sockets, files and the clock.
//! Three of them run the same core: io_uring (the default where the kernel allows it), epoll
//! (the fallback), and the seeded simulator.

mod disk;
pub mod epoll;
pub mod sim;
pub mod uring;
