//! Drivers run the sans-IO core against the world: they own sockets, files and the clock.
//! Today there is the seeded simulator; the io_uring and epoll drivers come next.

pub mod epoll;
pub mod sim;
