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
    }
  ]
}
