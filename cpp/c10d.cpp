// A C API over libtorch's c10d (the engine under torch.distributed and DDP), for src/dist/.
//
// One process group per process: a TCPStore rendezvous (hosted by rank 0, or by torchrun's
// agent when TORCHELASTIC_USE_AGENT_STORE says so, exactly as torch's env:// init does) and a
// ProcessGroupGloo for CPU tensors, plus a ProcessGroupNCCL for CUDA tensors when this file is
// compiled with USE_C10D_NCCL (build.rs does that when the venv ships nccl.h and the CUDA
// headers). Every call catches every C++ exception and returns it as a malloc'd message
// (NULL on success): nothing is thrown across the FFI boundary.
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/csrc/distributed/c10d/GroupRegistry.hpp>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroup.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#ifdef USE_C10D_NCCL
#include <c10/cuda/CUDAFunctions.h>
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <string>

namespace {

using ms = std::chrono::milliseconds;

struct Group {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::Backend> gloo;
  c10::intrusive_ptr<c10d::Backend> nccl; // null unless CUDA was asked for and is present
  // The same backends as a ProcessGroup registered under `name`, for libtorch's functional
  // collectives (`_c10d_functional*` ops), which find their group by name. Their autograd
  // variants are what SyncBatchNorm needs: tch cannot define an autograd function itself.
  c10::intrusive_ptr<c10d::ProcessGroup> pg;
  std::string name;
  int world = 1;

  ~Group() {
    if (!name.empty()) {
      try {
        c10d::unregister_process_group(name);
      } catch (...) {
      }
    }
  }
};

char* dup(const std::string& s) {
  char* out = static_cast<char*>(std::malloc(s.size() + 1));
  if (out != nullptr) {
    std::memcpy(out, s.c_str(), s.size() + 1);
  }
  return out;
}

// Runs f, turning any exception into a message (without c10's C++ backtrace).
template <class F>
char* guard(F&& f) {
  try {
    f();
    return nullptr;
  } catch (const c10::Error& e) {
    return dup(e.what_without_backtrace());
  } catch (const std::exception& e) {
    return dup(e.what());
  } catch (...) {
    return dup("unknown C++ exception in c10d");
  }
}

c10d::Backend& backend_for(Group& g, const at::Tensor& t) {
  if (t.is_cuda()) {
    TORCH_CHECK(g.nccl, "a CUDA tensor, but the process group has no NCCL backend");
    return *g.nccl;
  }
  return *g.gloo;
}

void wait(const c10::intrusive_ptr<c10d::Work>& work, int64_t timeout_ms) {
  // Gloo enforces the timeout inside the collective too (the options' timeout); this wait
  // bounds the caller in any case. A timed-out wait throws, which guard() reports.
  work->wait(ms(timeout_ms));
}

} // namespace

extern "C" {

// Creates the process group. `backend` 0 = gloo only, 1 = gloo + NCCL (CUDA device
// `local_device`); `name` registers it for the functional collectives (unique in the process).
// Returns NULL and sets *err on failure.
void* ds_c10d_new(
    const char* name,
    const char* master_addr,
    int port,
    int rank,
    int world,
    int use_agent_store,
    int backend,
    int local_device,
    int64_t timeout_ms,
    char** err) {
  Group* g = nullptr;
  *err = guard([&] {
    c10d::TCPStoreOptions so;
    so.port = static_cast<std::uint16_t>(port);
    so.isServer = rank == 0 && use_agent_store == 0;
    so.numWorkers = static_cast<std::size_t>(world);
    so.waitWorkers = true;
    so.timeout = ms(timeout_ms);
    auto tcp = c10::make_intrusive<c10d::TCPStore>(std::string(master_addr), so);
    auto store = c10::make_intrusive<c10d::PrefixStore>("dino_stream", tcp);
    auto out = std::make_unique<Group>();
    out->world = world;
    out->store = store;
    auto gopts = c10d::ProcessGroupGloo::Options::create_default(ms(timeout_ms));
    out->gloo = c10::make_intrusive<c10d::ProcessGroupGloo>(
        c10::make_intrusive<c10d::PrefixStore>("gloo", store), rank, world, gopts);
    if (backend == 1) {
#ifdef USE_C10D_NCCL
      c10::cuda::set_device(static_cast<c10::DeviceIndex>(local_device));
      auto nopts = c10d::ProcessGroupNCCL::Options::create();
      nopts->timeout = ms(timeout_ms);
      out->nccl = c10::make_intrusive<c10d::ProcessGroupNCCL>(
          c10::make_intrusive<c10d::PrefixStore>("nccl", store), rank, world, nopts);
#else
      (void)local_device;
      TORCH_CHECK(false, "NCCL asked for, but dino-stream was built without it (no nccl.h)");
#endif
    }
    out->pg = c10::make_intrusive<c10d::ProcessGroup>(store, rank, world);
    out->pg->setBackend(c10::DeviceType::CPU, c10d::ProcessGroup::BackendType::GLOO, out->gloo);
    out->pg->setDefaultBackend(c10d::ProcessGroup::BackendType::GLOO);
    if (out->nccl) {
      out->pg->setBackend(
          c10::DeviceType::CUDA, c10d::ProcessGroup::BackendType::NCCL, out->nccl);
    }
    out->pg->setGroupName(name);
    c10d::register_process_group(name, out->pg);
    out->name = name;
    g = out.release();
  });
  return g;
}

void ds_c10d_free(void* group) {
  delete static_cast<Group*>(group);
}

void ds_c10d_free_str(char* s) {
  std::free(s);
}

int ds_c10d_built_with_nccl() {
#ifdef USE_C10D_NCCL
  return 1;
#else
  return 0;
#endif
}

// op 0 = sum, 1 = average. Gloo has no AVG, so the average is a sum divided by the world.
char* ds_c10d_all_reduce(void* group, void* tensor, int op, int64_t timeout_ms) {
  return guard([&] {
    auto& g = *static_cast<Group*>(group);
    auto& t = *static_cast<at::Tensor*>(tensor);
    auto& b = backend_for(g, t);
    std::vector<at::Tensor> ts{t};
    c10d::AllreduceOptions o;
    const bool native_avg = op == 1 && t.is_cuda();
    o.reduceOp = native_avg ? c10d::ReduceOp::AVG : c10d::ReduceOp::SUM;
    o.timeout = ms(timeout_ms);
    wait(b.allreduce(ts, o), timeout_ms);
    if (op == 1 && !native_avg) {
      t.div_(g.world);
    }
  });
}

char* ds_c10d_broadcast(void* group, void* tensor, int root, int64_t timeout_ms) {
  return guard([&] {
    auto& g = *static_cast<Group*>(group);
    auto& t = *static_cast<at::Tensor*>(tensor);
    std::vector<at::Tensor> ts{t};
    c10d::BroadcastOptions o;
    o.rootRank = root;
    o.timeout = ms(timeout_ms);
    wait(backend_for(g, t).broadcast(ts, o), timeout_ms);
  });
}

// out has a leading dimension of the world size; out[r] receives rank r's `input`.
char* ds_c10d_all_gather(void* group, void* out, void* input, int64_t timeout_ms) {
  return guard([&] {
    auto& g = *static_cast<Group*>(group);
    auto& o = *static_cast<at::Tensor*>(out);
    auto& in = *static_cast<at::Tensor*>(input);
    TORCH_CHECK(o.dim() >= 1 && o.size(0) == g.world, "all_gather: out must be [world, ...]");
    std::vector<std::vector<at::Tensor>> outs(1);
    for (int r = 0; r < g.world; ++r) {
      outs[0].push_back(o.select(0, r));
    }
    std::vector<at::Tensor> ins{in};
    c10d::AllgatherOptions opts;
    opts.timeout = ms(timeout_ms);
    wait(backend_for(g, in).allgather(outs, ins, opts), timeout_ms);
  });
}

// A differentiable all-gather (`_c10d_functional_autograd::all_gather_into_tensor`): returns
// a new tensor, rank r's `input` at rows [r * n, (r + 1) * n), whose backward pass sums each
// rank's gradient for this rank's rows over all ranks (a reduce-scatter). *out receives a
// heap-allocated at::Tensor that the caller owns (tch's Tensor::from_ptr).
char* ds_c10d_all_gather_autograd(void* group, void* input, void** out) {
  return guard([&] {
    auto& g = *static_cast<Group*>(group);
    auto& in = *static_cast<at::Tensor*>(input);
    static auto gather =
        c10::Dispatcher::singleton()
            .findSchemaOrThrow("_c10d_functional_autograd::all_gather_into_tensor", "")
            .typed<at::Tensor(const at::Tensor&, int64_t, const std::string&)>();
    static auto wait_tensor = c10::Dispatcher::singleton()
                                  .findSchemaOrThrow("_c10d_functional::wait_tensor", "")
                                  .typed<at::Tensor(const at::Tensor&)>();
    at::Tensor gathered = gather.call(in, g.world, g.name);
    // The collective may still be in flight: wait on an alias of its output (the work is
    // keyed by storage), leaving the autograd graph of `gathered` untouched.
    wait_tensor.call(gathered.detach());
    *out = new at::Tensor(std::move(gathered));
  });
}

char* ds_c10d_barrier(void* group, int64_t timeout_ms) {
  return guard([&] {
    auto& g = *static_cast<Group*>(group);
    c10d::BarrierOptions o;
    o.timeout = ms(timeout_ms);
    wait(g.gloo->barrier(o), timeout_ms);
  });
}

// The rendezvous store's key-value API, for progress marks that let a failing rank say which
// peer fell behind. get waits at most timeout_ms for the key; *out_len gets the value's length.
char* ds_c10d_store_set(void* group, const char* key, const uint8_t* value, size_t len) {
  return guard([&] {
    auto& g = *static_cast<Group*>(group);
    g.store->set(key, std::vector<uint8_t>(value, value + len));
  });
}

char* ds_c10d_store_get(
    void* group, const char* key, int64_t timeout_ms, uint8_t* buf, size_t cap, size_t* out_len) {
  return guard([&] {
    auto& g = *static_cast<Group*>(group);
    g.store->setTimeout(ms(timeout_ms));
    g.store->wait({key}, ms(timeout_ms));
    auto v = g.store->get(key);
    *out_len = v.size();
    std::memcpy(buf, v.data(), std::min(cap, v.size()));
  });
}

} // extern "C"
