//! Tile-path parsing must never panic, and any path it accepts must be the canonical path of
//! the tile it parsed to.
#![no_main]

use actors::domain::tiles::Tile;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(path) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(tile) = Tile::parse(path) {
        assert_eq!(tile.path(), path, "accepted a non-canonical path");
        assert_eq!(Tile::parse(&tile.path()).ok(), Some(tile));
    }
});
