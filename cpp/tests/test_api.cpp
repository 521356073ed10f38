// The ABI surface: versioning, status names, NULL and out-of-range arguments, bad batches and
// configs: each gives its status and a message naming the argument or field.
#include <cstring>
#include <limits>

#include "helpers.hpp"

using namespace limatest;

namespace {

TEST(Api, VersionAndStatusNames) {
    EXPECT_EQ(lima_abi_version(), LIMA_ABI_VERSION);
    EXPECT_NE(std::string(lima_version_string()).find("liblima"), std::string::npos);
    // The backends this process can use: the CUDA plugin named when it loads, else why not.
    const std::string v = lima_version_string(), plugin = lima_cuda_plugin_path();
    if (plugin.empty())
        EXPECT_NE(v.find("backends: cpu, cuda unavailable: "), std::string::npos) << v;
    else
        EXPECT_NE(v.find("backends: cpu, cuda (" + plugin + ")"), std::string::npos) << v;
    EXPECT_STREQ(lima_status_name(LIMA_ERR_FORMAT), "LIMA_ERR_FORMAT");
    EXPECT_STREQ(lima_status_name(1234), "LIMA_ERR_UNKNOWN");
    EXPECT_EQ(lima_set_num_threads(1), LIMA_OK);
    EXPECT_EQ(lima_get_num_threads(), 1);
    EXPECT_EQ(lima_set_num_threads(0), LIMA_OK);
}

TEST(Api, NullArgumentsAreErrorsNotCrashes) {
    lima_model *m = nullptr;
    EXPECT_LIMA_ERR(lima_model_create(nullptr, "cpu", 0, &m), LIMA_ERR_INVALID_ARGUMENT, "cfg is NULL");
    EXPECT_LIMA_ERR(lima_model_load(nullptr, "cpu", &m), LIMA_ERR_INVALID_ARGUMENT, "dir is NULL");
    EXPECT_LIMA_ERR(lima_trainer_step(nullptr, 1e-5f, nullptr), LIMA_ERR_INVALID_ARGUMENT, "trainer is NULL");
    lima_model_free(nullptr);
    lima_trainer_free(nullptr);
    lima_batch_free(nullptr);
}

TEST(Api, DevicesOtherThanCpu) {
    const lima_model_config c = tiny_config();
    lima_model *m = nullptr;
    int32_t n = 0;
    if (lima_cuda_devices(nullptr, 0, &n) != LIMA_OK) {  // no plugin, driver or device: the missing piece is named
        const std::string why = lima_last_error();
        EXPECT_EQ(lima_model_create(&c, "cuda:0", 0, &m), LIMA_ERR_UNSUPPORTED);
        EXPECT_EQ(std::string(lima_last_error()), why);
    } else {
        EXPECT_LIMA_ERR(lima_model_create(&c, "cuda:99", 0, &m), LIMA_ERR_INVALID_ARGUMENT, "CUDA device 99 does not exist");
    }
    EXPECT_LIMA_ERR(lima_model_create(&c, "cuda:x", 0, &m), LIMA_ERR_INVALID_ARGUMENT, "unknown device \"cuda:x\"");
    EXPECT_LIMA_ERR(lima_model_create(&c, "tpu", 0, &m), LIMA_ERR_INVALID_ARGUMENT, "unknown device \"tpu\"");
}

TEST(Api, CudaDevicesAreListedOrTheMissingPieceIsNamed) {
    lima_device_info d[8];
    int32_t n = -1;
    const int st = lima_cuda_devices(d, 8, &n);
    if (st == LIMA_OK) {  // a GPU machine with the plugin built
        EXPECT_GE(n, 1);
        EXPECT_GT(d[0].total_memory, 0);
        EXPECT_GT(std::strlen(d[0].name), 0u);
    } else {  // no plugin, no driver or no device: each said plainly
        EXPECT_EQ(st, LIMA_ERR_UNSUPPORTED);
        const std::string msg = lima_last_error();
        EXPECT_TRUE(msg.find("no CUDA backend plugin found") != std::string::npos || msg.find("no NVIDIA driver") != std::string::npos ||
                    msg.find("cannot list CUDA devices") != std::string::npos)
            << msg;
    }
    EXPECT_LIMA_ERR(lima_cuda_devices(nullptr, 4, &n), LIMA_ERR_INVALID_ARGUMENT, "out is NULL");
}

TEST(Api, CudaPluginSelectionTriesEachFileAndNamesWhyNoneLoads) {
    const std::filesystem::path dir = std::filesystem::temp_directory_path() / "lima_plugin_select";
    std::filesystem::create_directories(dir);
    const std::string missing = (dir / "liblima_cuda99.so").string(), junk = (dir / "liblima_cuda98.so").string();
    std::FILE *f = std::fopen(junk.c_str(), "w");
    ASSERT_TRUE(f);
    std::fputs("not a shared library", f);
    std::fclose(f);
    const char *paths[] = {missing.c_str(), junk.c_str()};
    int32_t chosen = -7;
    EXPECT_LIMA_ERR(lima_cuda_plugin_select(paths, 2, &chosen), LIMA_ERR_UNSUPPORTED, "liblima_cuda99.so");
    EXPECT_NE(std::string(lima_last_error()).find("liblima_cuda98.so"), std::string::npos) << lima_last_error();
    EXPECT_EQ(chosen, -7);
    EXPECT_LIMA_ERR(lima_cuda_plugin_select(nullptr, 0, &chosen), LIMA_ERR_INVALID_ARGUMENT, "no plugin files");
    const char *empty[] = {""};
    EXPECT_LIMA_ERR(lima_cuda_plugin_select(empty, 1, &chosen), LIMA_ERR_INVALID_ARGUMENT, "path 0 is empty");
    std::filesystem::remove_all(dir);
}

TEST(Api, CudaDriverVersionOrNoDriverSaidPlainly) {
    int32_t v = -1;
    const int st = lima_cuda_driver_version(&v);
    if (st == LIMA_OK) {
        EXPECT_GE(v, 11000);  // CUDA 11.0 or newer, as 1000 * major + 10 * minor
    } else {
        EXPECT_EQ(st, LIMA_ERR_UNSUPPORTED);
        EXPECT_NE(std::string(lima_last_error()).find("NVIDIA driver"), std::string::npos) << lima_last_error();
    }
    EXPECT_LIMA_ERR(lima_cuda_driver_version(nullptr), LIMA_ERR_INVALID_ARGUMENT, "version");
}

TEST(Api, MemoryPlanOnTheCpuAndItsBadArguments) {
    const lima_model_config c = tiny_config();
    lima_model *m = nullptr;
    LIMA_OK_OR_FAIL(lima_model_create(&c, "cpu", 0, &m));
    ModelPtr M(m);
    lima_train_config tc;
    lima_train_config_init(&tc);
    lima_trainer *t = nullptr;
    LIMA_OK_OR_FAIL(lima_trainer_create(m, &tc, &t));
    TrainerPtr T(t);
    int64_t np = 0;
    LIMA_OK_OR_FAIL(lima_model_num_params(m, &np));
    lima_memory_plan small{}, big{};
    LIMA_OK_OR_FAIL(lima_trainer_plan_memory(t, 1, 16, &small));
    LIMA_OK_OR_FAIL(lima_trainer_plan_memory(t, 4, 16, &big));
    EXPECT_EQ(small.weights, np * 4);
    EXPECT_EQ(small.optimizer, np * 12);
    EXPECT_EQ(big.activations, 4 * small.activations);  // linear in the tokens
    EXPECT_EQ(big.total, big.weights + big.optimizer + big.activations + big.workspace);
    EXPECT_LIMA_ERR(lima_trainer_plan_memory(t, 0, 16, &small), LIMA_ERR_INVALID_ARGUMENT, "rows (0)");
    EXPECT_LIMA_ERR(lima_trainer_plan_memory(nullptr, 1, 16, &small), LIMA_ERR_INVALID_ARGUMENT, "trainer is NULL");
    EXPECT_LIMA_ERR(lima_cuda_versions(nullptr, 10), LIMA_ERR_INVALID_ARGUMENT, "out is NULL");
}

TEST(Api, InvalidModelConfigNamesTheField) {
    auto expect_bad = [](void (*edit)(lima_model_config &), const char *needle) {
        lima_model_config c = tiny_config();
        edit(c);
        lima_model *m = nullptr;
        EXPECT_LIMA_ERR(lima_model_create(&c, "cpu", 0, &m), LIMA_ERR_INVALID_ARGUMENT, needle);
    };
    expect_bad([](auto &c) { c.vocab_size = 0; }, "vocab_size must be > 0");
    expect_bad([](auto &c) { c.num_kv_heads = 3; }, "num_key_value_heads (3)");
    expect_bad([](auto &c) { c.hidden_size = 18; }, "hidden_size (18) must be divisible by num_attention_heads (4)");
    expect_bad([](auto &c) { c.head_dim = 5; }, "head_dim must be even");
    expect_bad([](auto &c) { c.rms_norm_eps = std::numeric_limits<float>::quiet_NaN(); }, "rms_norm_eps");
    expect_bad([](auto &c) { c.rope_theta = -1.0f; }, "rope_theta");
}

TEST(Api, InvalidTrainConfigAndLearningRate) {
    ModelPtr m = make_model(tiny_config(), 0);
    lima_train_config tc = train_config();
    tc.beta2 = 1.0f;
    lima_trainer *t = nullptr;
    EXPECT_LIMA_ERR(lima_trainer_create(m.get(), &tc, &t), LIMA_ERR_INVALID_ARGUMENT, "beta2 must be in [0, 1)");
    tc = train_config();
    tc.resid_dropout = 1.5f;
    EXPECT_LIMA_ERR(lima_trainer_create(m.get(), &tc, &t), LIMA_ERR_INVALID_ARGUMENT, "resid_dropout");
    TrainerPtr ok = make_trainer(m.get(), train_config());
    EXPECT_LIMA_ERR(lima_trainer_step(ok.get(), std::numeric_limits<float>::quiet_NaN(), nullptr), LIMA_ERR_INVALID_ARGUMENT,
                    "learning rate");
}

TEST(Api, BadBatchesAreRejectedAndTheOldContentKept) {
    lima_batch *raw = nullptr;
    EXPECT_LIMA_ERR(lima_batch_create(0, 8, &raw), LIMA_ERR_INVALID_ARGUMENT, "rows (0)");
    BatchPtr b = make_batch(1, 4, {1, 2, 3, 4}, {0, 1, 1, 1}, {});
    const std::vector<int32_t> tok{1, 2, 3, 4};
    const std::vector<uint8_t> pad_mask{0, 1, 1, 1};
    const std::vector<int32_t> pad_seg{1, 1, 1, 0};
    EXPECT_LIMA_ERR(lima_batch_set(b.get(), tok.data(), pad_mask.data(), pad_seg.data()), LIMA_ERR_INVALID_ARGUMENT,
                    "loss_mask is set on padding at row 0, position 3");
    const std::vector<int32_t> split{1, 2, 1, 1};
    EXPECT_LIMA_ERR(lima_batch_set(b.get(), tok.data(), nullptr, split.data()), LIMA_ERR_INVALID_ARGUMENT,
                    "segment id 1 of row 0 is not contiguous");
    const std::vector<int32_t> neg{1, 1, -1, 1};
    EXPECT_LIMA_ERR(lima_batch_set(b.get(), tok.data(), nullptr, neg.data()), LIMA_ERR_INVALID_ARGUMENT, "negative");
    const std::vector<uint8_t> two{0, 2, 0, 0};
    EXPECT_LIMA_ERR(lima_batch_set(b.get(), tok.data(), two.data(), nullptr), LIMA_ERR_INVALID_ARGUMENT, "must be 0 or 1");
    int64_t n = 0;
    LIMA_OK_OR_FAIL(lima_batch_num_targets(b.get(), &n));
    EXPECT_EQ(n, 3);  // the first, valid content is still there
}

TEST(Api, BatchThatDoesNotFitTheModel) {
    lima_model_config c = tiny_config();
    c.max_position_embeddings = 8;
    ModelPtr m = make_model(c, 0);
    TrainerPtr t = make_trainer(m.get(), train_config());
    BatchPtr oov = make_batch(1, 3, {1, 23, 2}, {0, 1, 1}, {});
    EXPECT_LIMA_ERR(lima_trainer_forward_backward(t.get(), oov.get(), 2, nullptr), LIMA_ERR_INVALID_ARGUMENT,
                    "token id 23 at row 0, position 1 is outside the vocabulary [0, 23)");
    BatchPtr longb = make_batch(1, 9, std::vector<int32_t>(9, 1), std::vector<uint8_t>(9, 1), {});
    EXPECT_LIMA_ERR(lima_trainer_forward_backward(t.get(), longb.get(), 8, nullptr), LIMA_ERR_INVALID_ARGUMENT,
                    "exceeds max_position_embeddings (8)");
    BatchPtr ok = make_batch(1, 4, {1, 2, 3, 4}, {1, 1, 1, 1}, {});
    EXPECT_LIMA_ERR(lima_trainer_forward_backward(t.get(), ok.get(), 2, nullptr), LIMA_ERR_INVALID_ARGUMENT,
                    "step_num_targets (2)");
    std::vector<float> small(3);
    EXPECT_LIMA_ERR(lima_model_logits(m.get(), ok.get(), small.data(), 3), LIMA_ERR_SHAPE, "(B, T, V) needs 92");
    EXPECT_LIMA_ERR(lima_model_read_tensor(m.get(), "model.nope", small.data(), 3), LIMA_ERR_INVALID_ARGUMENT,
                    "no parameter named model.nope");
    lima_batch *empty = nullptr;
    lima_batch_create(1, 4, &empty);
    BatchPtr e(empty);
    EXPECT_LIMA_ERR(lima_trainer_forward_backward(t.get(), e.get(), 1, nullptr), LIMA_ERR_STATE, "no data");
}

TEST(Api, NanWeightsGiveAClearErrorNotAnUpdate) {
    ModelPtr m = make_model(tiny_config(), 0);
    auto w = read_tensor(m.get(), "model.norm.weight");
    w[3] = std::numeric_limits<float>::quiet_NaN();
    lima_model_write_tensor(m.get(), "model.norm.weight", w.data(), int64_t(w.size()));
    TrainerPtr t = make_trainer(m.get(), train_config());
    BatchPtr b = make_batch(1, 4, {1, 2, 3, 4}, {1, 1, 1, 1}, {});
    EXPECT_LIMA_ERR(lima_trainer_forward_backward(t.get(), b.get(), 3, nullptr), LIMA_ERR_INVALID_ARGUMENT, "not finite");
}

}  // namespace
