/* The C ABI between forkpool and a native task library. Plain C so that a library
 * does not depend on the daemon's C++ or Abseil ABI. Task authors use task.h. */
#ifndef FORKPOOL_SDK_TASK_ABI_H_
#define FORKPOOL_SDK_TASK_ABI_H_

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* 2 added forkpool_task_context_v1.write_output. A host accepts libraries of every
 * version from FORKPOOL_TASK_ABI_MIN_VERSION on (it always fills the whole context);
 * an older host refuses a newer library, which could read past its context. */
#define FORKPOOL_TASK_ABI_VERSION 2
#define FORKPOOL_TASK_ABI_MIN_VERSION 1

/* Bytes allocated with malloc by whoever fills them and freed by the other side. */
typedef struct forkpool_buffer {
  char* data;
  size_t size;
} forkpool_buffer;

/* What a running task may know and use; valid only during the call. */
typedef struct forkpool_task_context_v1 {
  int32_t pid;
  int32_t worker_index;
  const char* pool;
  const char* task_id;
  int32_t attempt;
  /* Hard deadline in ns since the Unix epoch; 0 when there is none. */
  int64_t deadline_unix_ns;
  /* Becomes nonzero when the soft time limit has passed. */
  const volatile int* soft_limit_reached;
  /* Sends a request to the daemon (e.g. "queue.put") and blocks for its reply.
   * Returns an absl status code; on error fills `error` with its text. */
  int (*request)(void* host, const char* method, const char* body, size_t body_size,
                 forkpool_buffer* reply, forkpool_buffer* error);
  void* host;
  /* When not NULL, a successful task may hand its output here instead of filling
   * `output` (the host copies it during the call, saving a malloc and a copy per
   * item); `output` is then left empty. */
  void (*write_output)(void* host, const char* data, size_t size);
} forkpool_task_context_v1;

/* A task function: returns an absl status code (0 = OK) and, on success, either
 * fills `output` or passes its bytes to ctx->write_output; on failure fills `error`
 * (its message). */
typedef int (*forkpool_task_fn_v1)(const forkpool_task_context_v1* ctx,
                                   const char* input, size_t input_size,
                                   forkpool_buffer* output, forkpool_buffer* error);

typedef struct forkpool_task_entry_v1 {
  const char* name;
  forkpool_task_fn_v1 fn;
} forkpool_task_entry_v1;

typedef struct forkpool_task_table_v1 {
  uint32_t abi_version;
  uint32_t count;
  const forkpool_task_entry_v1* entries;
} forkpool_task_table_v1;

/* The one symbol forkpool looks up in a task library. */
#define FORKPOOL_TASK_TABLE_SYMBOL "forkpool_get_task_table_v1"
typedef const forkpool_task_table_v1* (*forkpool_get_task_table_v1_fn)(void);

#ifdef __cplusplus
}
#endif

#endif /* FORKPOOL_SDK_TASK_ABI_H_ */
