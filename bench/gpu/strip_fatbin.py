"""Shrink a CUDA shared library to what one GPU architecture can load, so that a newer
cuSPARSELt than PyTorch's fits the device tool's 64 MiB carry limit once xz-compressed.

Every fatbin container in .nv_fatbin and .cask_resource is walked; an entry is kept when that
architecture can run it (its own SASS, or PTX of an older or equal architecture where the
container has no SASS for it) and every other entry's payload is overwritten with zeros. Headers,
offsets and sizes stay as they were, so the file loads exactly like the original on that GPU;
the zeros compress to nothing. With --recompress, each kept zstd-compressed payload is
compressed again at a higher level into its own slot (the entry's compressed-size field
updated, the rest of the slot zeroed): the same cubin, ~15% fewer bytes. Used for the device
runs only, never shipped. --drop-kernels REGEX zeroes, inside the kept cubins, the code of the
kernels whose names match (e.g. the fp8/int8 GEMMs a fp16/bf16 run never launches).

    python3 bench/gpu/strip_fatbin.py IN.so OUT.so [--sm 90] [--recompress] [--drop-kernels REGEX]
    (--recompress and --drop-kernels need the zstandard module)
"""
import argparse
import os
import re
import struct
import subprocess
import sys

MAGIC = struct.pack("<I", 0xBA55ED50)
ZSTD_MAGIC = bytes.fromhex("28b52ffd")
KIND_PTX, KIND_SASS = 1, 2


def fatbin_containers(buf, start, end):
    """(offset, [(kind, arch, payload_offset, payload_size)]) for each well-formed container."""
    i = buf.find(MAGIC, start, end)
    while i != -1:
        _, version, header_size, fat_size = struct.unpack_from("<IHHQ", buf, i)
        stop = i + 16 + fat_size
        entries, p = [], i + 16
        if version == 1 and header_size == 16 and fat_size > 0 and stop <= end:
            while p < stop:
                kind, _, entry_header, payload = struct.unpack_from("<HHIQ", buf, p)
                arch = struct.unpack_from("<I", buf, p + 28)[0]
                if kind not in (KIND_PTX, KIND_SASS) or entry_header < 64 or p + entry_header + payload > stop:
                    break
                entries.append((kind, arch, p + entry_header, payload, p))
                p += entry_header + payload
        if entries and p == stop:
            yield i, entries
            i = buf.find(MAGIC, stop, end)
        else:  # the magic number inside other data: not a container
            i = buf.find(MAGIC, i + 4, end)


def drop_kernel_code(elf, pattern):
    """Zero the .text.<kernel> sections of a cubin whose kernel names match; returns bytes zeroed."""
    if elf[:4] != b"\x7fELF":
        return 0
    shoff = struct.unpack_from("<Q", elf, 0x28)[0]
    entsize, count, names_index = struct.unpack_from("<HHH", elf, 0x3A)
    sections = [struct.unpack_from("<IIQQQQ", elf, shoff + i * entsize) for i in range(count)]
    names_at = sections[names_index][4]
    dropped = 0
    for name, _, _, _, off, size in sections:
        end = elf.index(b"\0", names_at + name)
        section = elf[names_at + name:end].decode(errors="replace")
        if section.startswith(".text.") and pattern.search(section[6:]):
            elf[off:off + size] = bytes(size)
            dropped += size
    return dropped


def recompress(buf, header, p, n, pattern=None):
    """Compress a zstd payload again at level 19, in place, after dropping the code of the
    kernels `pattern` matches; returns (compressed bytes saved, code bytes dropped)."""
    import zstandard

    compressed = struct.unpack_from("<I", buf, header + 16)[0]
    raw_size = struct.unpack_from("<Q", buf, header + 56)[0]
    if bytes(buf[p:p + 4]) != ZSTD_MAGIC or not 0 < compressed <= n:
        return 0, 0
    raw = bytearray(zstandard.ZstdDecompressor().decompress(bytes(buf[p:p + compressed]), max_output_size=raw_size))
    if len(raw) != raw_size:
        sys.exit(f"fatbin entry at {p:#x}: {len(raw)} bytes decompressed, header says {raw_size}")
    dropped = drop_kernel_code(raw, pattern) if pattern else 0
    again = zstandard.ZstdCompressor(level=19, write_content_size=True).compress(bytes(raw))
    if len(again) >= compressed:
        if dropped:
            sys.exit(f"fatbin entry at {p:#x}: recompressed payload does not fit its slot")
        return 0, 0
    buf[p:p + n] = again + bytes(n - len(again))
    struct.pack_into("<I", buf, header + 16, len(again))
    return compressed - len(again), dropped


def section_ranges(path, names):
    out = subprocess.run(["readelf", "-S", "-W", path], capture_output=True, text=True, check=True).stdout
    ranges = []
    for line in out.splitlines():
        parts = line.replace("[ ", "[").split()
        if len(parts) > 5 and parts[1] in names:
            ranges.append((parts[1], int(parts[4], 16), int(parts[5], 16)))
    return ranges


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("input")
    ap.add_argument("output")
    ap.add_argument("--sm", type=int, default=90, help="the GPU architecture to keep (90: Hopper)")
    ap.add_argument("--recompress", action="store_true", help="zstd level 19 for the kept payloads")
    ap.add_argument("--drop-kernels", metavar="REGEX", help="zero the code of kept kernels whose names match")
    a = ap.parse_args()
    buf = bytearray(open(a.input, "rb").read())
    ranges = section_ranges(a.input, (".nv_fatbin", ".cask_resource"))
    if not ranges:
        sys.exit(f"{a.input}: no .nv_fatbin section: not a CUDA library")
    kept = zeroed = containers = saved = dropped = 0
    pattern = re.compile(a.drop_kernels) if a.drop_kernels else None
    for _, off, size in ranges:
        for _, entries in fatbin_containers(buf, off, off + size):
            containers += 1
            has_sass = any(k == KIND_SASS and arch == a.sm for k, arch, *_ in entries)
            for k, arch, p, n, header in entries:
                usable = (k == KIND_SASS and arch == a.sm) or (k == KIND_PTX and arch <= a.sm and not has_sass)
                if usable:
                    kept += n
                    if a.recompress or pattern:
                        s, d = recompress(buf, header, p, n, pattern)
                        saved, dropped = saved + s, dropped + d
                        if pattern and k == KIND_SASS and buf[p:p + 4] == b"\x7fELF":  # stored uncompressed
                            elf = bytearray(buf[p:p + n])
                            dropped += drop_kernel_code(elf, pattern)
                            buf[p:p + n] = elf
                else:
                    buf[p:p + n] = bytes(n)
                    zeroed += n
    if kept == 0:
        sys.exit(f"{a.input}: nothing loadable on sm_{a.sm}; refusing to write an empty library")
    tmp = a.output + ".tmp"
    with open(tmp, "wb") as f:
        f.write(buf)
    os.replace(tmp, a.output)
    print(f"{containers} fatbin containers: kept {kept >> 20} MiB for sm_{a.sm} ({saved >> 20} MiB saved by"
          f" recompression, {dropped >> 20} MiB of kernel code dropped), zeroed {zeroed >> 20} MiB")


if __name__ == "__main__":
    main()
