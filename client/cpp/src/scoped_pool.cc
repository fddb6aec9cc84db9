// ScopedPool: a pool that lives as long as a C++ scope.
#include <utility>

#include "connection.h"
#include "forkpool/client.h"

namespace forkpool {

absl::StatusOr<ScopedPool> ScopedPool::Create(const Client& client,
                                              const v1::PoolSettings& settings) {
  absl::StatusOr<v1::PoolInfo> created = client.CreatePool(settings);
  if (!created.ok()) return created.status();
  return ScopedPool(std::unique_ptr<Client>(new Client(client.connection_)), *std::move(created));
}

ScopedPool::ScopedPool(std::unique_ptr<Client> client, v1::PoolInfo created)
    : client_(std::move(client)),
      pool_(client_->pool(created.settings().name())),
      created_(std::move(created)) {}

ScopedPool::ScopedPool(ScopedPool&& other) noexcept
    : client_(std::move(other.client_)),
      pool_(std::move(other.pool_)),
      created_(std::move(other.created_)) {}

ScopedPool& ScopedPool::operator=(ScopedPool&& other) noexcept {
  if (this != &other) {
    Release().IgnoreError();
    client_ = std::move(other.client_);
    pool_ = std::move(other.pool_);
    created_ = std::move(other.created_);
  }
  return *this;
}

ScopedPool::~ScopedPool() { Release().IgnoreError(); }

absl::Status ScopedPool::Release() {
  if (client_ == nullptr) return absl::OkStatus();
  std::unique_ptr<Client> client = std::move(client_);
  absl::Status terminated = client->TerminatePool(name()).status();
  absl::Status deleted = client->DeletePool(name());
  return terminated.ok() ? deleted : terminated;
}

absl::StatusOr<v1::PoolInfo> ScopedPool::Close() const {
  if (client_ == nullptr) return absl::FailedPreconditionError("scoped pool released");
  return client_->ClosePool(name());
}

absl::StatusOr<v1::PoolInfo> ScopedPool::Join(std::optional<absl::Duration> timeout) const {
  if (client_ == nullptr) return absl::FailedPreconditionError("scoped pool released");
  return client_->JoinPool(name(), timeout);
}

absl::StatusOr<v1::PoolInfo> ScopedPool::Terminate() const {
  if (client_ == nullptr) return absl::FailedPreconditionError("scoped pool released");
  return client_->TerminatePool(name());
}

}  // namespace forkpool
