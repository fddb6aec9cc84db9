// Status propagation macros (Debian's Abseil 20220623 ships none).
#ifndef FORKPOOL_COMMON_STATUS_MACROS_H_
#define FORKPOOL_COMMON_STATUS_MACROS_H_

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define FORKPOOL_STATUS_CONCAT_INNER_(a, b) a##b
#define FORKPOOL_STATUS_CONCAT_(a, b) FORKPOOL_STATUS_CONCAT_INNER_(a, b)

// Returns the status of `expr` from the enclosing function unless it is OK.
#define FORKPOOL_RETURN_IF_ERROR(expr)                   \
  do {                                                   \
    ::absl::Status forkpool_status_ = (expr);            \
    if (!forkpool_status_.ok()) return forkpool_status_; \
  } while (0)

// Evaluates `rexpr` (a StatusOr); returns its status on error, else moves the value
// into `lhs` (a declaration or an lvalue).
#define FORKPOOL_ASSIGN_OR_RETURN(lhs, rexpr)                                   \
  FORKPOOL_ASSIGN_OR_RETURN_IMPL_(                                              \
      FORKPOOL_STATUS_CONCAT_(forkpool_statusor_, __LINE__), lhs, rexpr)
#define FORKPOOL_ASSIGN_OR_RETURN_IMPL_(statusor, lhs, rexpr) \
  auto statusor = (rexpr);                                    \
  if (!statusor.ok()) return std::move(statusor).status();    \
  lhs = std::move(statusor).value()

#endif  // FORKPOOL_COMMON_STATUS_MACROS_H_
