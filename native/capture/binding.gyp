{
  "targets": [
    {
      "target_name": "rolltrace_capture",
      "sources": ["capture.c"],
      "cflags": ["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"],
      "libraries": ["-lpcap", "-lpthread"]
    }
  ]
}
