{
  "targets": [
    {
      "target_name": "ll_proto",
      "sources": ["ll_proto.c"],
      "cflags": ["-O2", "-Wall", "-Wno-unused-parameter", "<!@(pkg-config --cflags fuse3)"],
      "libraries": ["<!@(pkg-config --libs fuse3)"]
    }
  ]
}
