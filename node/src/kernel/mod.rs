//! Every touch of the kernel and the host: device-mapper ioctls and uevents
//! (`dm`), block devices, their identities and raw I/O (`disks`), mounts
//! (`mount`), foreign signatures (`signature`) and the paths a request may
//! name (`paths`). Each sits behind a small trait or a pure function so the
//! engine's decisions are unit-testable.

pub mod disks;
pub mod dm;
pub mod mount;
pub mod paths;
pub mod signature;
