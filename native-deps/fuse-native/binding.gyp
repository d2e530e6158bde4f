{
  "targets": [{
    "target_name": "fuse",
    "include_dirs": [
      "<!(node -e \"require('napi-macros')\")",
      "/usr/include/fuse3"
    ],
    "defines": ["_FILE_OFFSET_BITS=64"],
    "libraries": ["-lfuse3", "-lpthread"],
    "sources": ["fuse-native.c"],
    "cflags": ["-g", "-O3", "-Wall", "-Wno-unused-function", "-Wno-unused-variable"]
  }]
}
