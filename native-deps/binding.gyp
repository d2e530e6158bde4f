{
  "targets": [
    {
      "target_name": "chunk_cipher",
      "sources": ["chunk-cipher/chunk_cipher.c"],
      "cflags": ["-O3", "-Wall", "-Wextra", "-Wno-unused-parameter"]
    },
    {
      "target_name": "name_cipher",
      "sources": ["name-cipher/name_cipher.c"],
      "cflags": ["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"]
    },
    {
      "target_name": "posix",
      "sources": ["posix/posix.c"],
      "cflags": ["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"]
    },
    {
      "target_name": "fuse_session",
      "sources": ["fuse/session.c"],
      "defines": ["_FILE_OFFSET_BITS=64"],
      "cflags": ["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter", "<!@(pkg-config --cflags fuse3)"],
      "libraries": ["<!@(pkg-config --libs fuse3)"]
    },
    {
      "target_name": "backing",
      "sources": ["backing/backing.c"],
      "cflags": ["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"]
    }
  ]
}
