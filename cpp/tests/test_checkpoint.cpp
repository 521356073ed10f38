// Hugging Face checkpoint I/O: round trips in fp32/bf16/fp16, sharding, config fidelity,
// vocabulary resize, and every malformed-input path with the message that names what and where.
#include <fstream>
#include <functional>

#include "dtype.hpp"
#include "helpers.hpp"
#include "safetensors.hpp"

using namespace limatest;

namespace {

void write_text(const std::string &path, const std::string &s) { std::ofstream(path, std::ios::binary) << s; }
std::string read_all(const std::string &path) {
    std::ifstream f(path, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(f), {});
}

ModelPtr load(const std::string &dir) {
    lima_model *m = nullptr;
    EXPECT_EQ(lima_model_load(dir.c_str(), "cpu", &m), LIMA_OK) << lima_last_error();
    return ModelPtr(m);
}

TEST(Checkpoint, Fp32RoundTripIsExactAndConfigSurvives) {
    lima_model_config c = tiny_config();
    c.rope_theta = 500000.0f;
    c.rms_norm_eps = 1e-5f;
    ModelPtr m = make_model(c, 1);
    const std::string dir = temp_dir("rt32");
    LIMA_OK_OR_FAIL(lima_model_save(m.get(), dir.c_str(), LIMA_DTYPE_F32, 0));
    EXPECT_TRUE(std::filesystem::exists(dir + "/model.safetensors"));
    ModelPtr back = load(dir);
    lima_model_config c2;
    lima_model_get_config(back.get(), &c2);
    EXPECT_EQ(c2.num_kv_heads, 2);
    EXPECT_EQ(c2.rope_theta, 500000.0f);
    EXPECT_EQ(c2.rms_norm_eps, 1e-5f);
    for (const auto &n : tensor_names(m.get())) EXPECT_EQ(read_tensor(m.get(), n), read_tensor(back.get(), n)) << n;
    const std::string cfg = read_all(dir + "/config.json");
    EXPECT_NE(cfg.find("\"LlamaForCausalLM\""), std::string::npos);
    EXPECT_NE(cfg.find("\"rms_norm_eps\": 1e-05"), std::string::npos) << cfg;
}

TEST(Checkpoint, Bf16AndF16SavesRoundToThoseTypes) {
    ModelPtr m = make_model(tiny_config(), 2);
    for (int dt : {LIMA_DTYPE_BF16, LIMA_DTYPE_F16}) {
        const std::string dir = temp_dir("rt16-" + std::to_string(dt));
        LIMA_OK_OR_FAIL(lima_model_save(m.get(), dir.c_str(), dt, 0));
        ModelPtr back = load(dir);
        const std::string n = "model.layers.1.mlp.down_proj.weight";
        const auto a = read_tensor(m.get(), n), b = read_tensor(back.get(), n);
        for (size_t i = 0; i < a.size(); ++i) {
            const float want = dt == LIMA_DTYPE_BF16 ? lima::bf16_to_f32(lima::f32_to_bf16(a[i]))
                                                     : lima::f16_to_f32(lima::f32_to_f16(a[i]));
            ASSERT_EQ(b[i], want) << i;
        }
        EXPECT_NE(read_all(dir + "/config.json").find(dt == LIMA_DTYPE_BF16 ? "bfloat16" : "float16"), std::string::npos);
    }
}

TEST(Checkpoint, ShardedSaveWritesAnIndexAndLoadsBack) {
    ModelPtr m = make_model(tiny_config(), 4);
    const std::string dir = temp_dir("sharded");
    LIMA_OK_OR_FAIL(lima_model_save(m.get(), dir.c_str(), LIMA_DTYPE_F32, 0));  // first unsharded ...
    LIMA_OK_OR_FAIL(lima_model_save(m.get(), dir.c_str(), LIMA_DTYPE_F32, 4096));  // ... then sharded over it
    EXPECT_TRUE(std::filesystem::exists(dir + "/model.safetensors.index.json"));
    EXPECT_FALSE(std::filesystem::exists(dir + "/model.safetensors"));  // no stale single file left to confuse loaders
    int shards = 0;
    for (auto &e : std::filesystem::directory_iterator(dir))
        if (e.path().filename().string().rfind("model-0", 0) == 0) ++shards;
    EXPECT_GT(shards, 2);
    ModelPtr back = load(dir);
    for (const auto &n : tensor_names(m.get())) EXPECT_EQ(read_tensor(m.get(), n), read_tensor(back.get(), n)) << n;
}

TEST(Checkpoint, LoadsTheTransformersWrittenGoldenCheckpoint) {
    ModelPtr m = load(data_dir() + "/golden/gqa_odd");
    lima_model_config c;
    lima_model_get_config(m.get(), &c);
    EXPECT_EQ(c.hidden_size, 45);
    EXPECT_EQ(c.num_heads, 9);
    EXPECT_EQ(c.num_kv_heads, 3);
    EXPECT_EQ(c.head_dim, 6);
    EXPECT_EQ(c.vocab_size, 67);
}

TEST(ResizeVocab, NewRowsAreTheMeanOfTheOldOnes) {
    lima_model_config c = tiny_config();
    ModelPtr m = make_model(c, 5);
    const auto emb = read_tensor(m.get(), "model.embed_tokens.weight"), head = read_tensor(m.get(), "lm_head.weight");
    LIMA_OK_OR_FAIL(lima_model_resize_vocab(m.get(), c.vocab_size + 2));
    const auto emb2 = read_tensor(m.get(), "model.embed_tokens.weight"), head2 = read_tensor(m.get(), "lm_head.weight");
    const int d = c.hidden_size, V = c.vocab_size;
    ASSERT_EQ(emb2.size(), size_t(V + 2) * d);
    for (size_t i = 0; i < emb.size(); ++i) ASSERT_EQ(emb2[i], emb[i]);
    for (int col = 0; col < d; ++col) {
        double me = 0, mh = 0;
        for (int r = 0; r < V; ++r) {
            me += emb[size_t(r * d + col)];
            mh += head[size_t(r * d + col)];
        }
        for (int r = V; r < V + 2; ++r) {
            EXPECT_NEAR(emb2[size_t(r * d + col)], me / V, 1e-6);
            EXPECT_NEAR(head2[size_t(r * d + col)], mh / V, 1e-6);
        }
    }
    lima_model_config c2;
    lima_model_get_config(m.get(), &c2);
    EXPECT_EQ(c2.vocab_size, V + 2);
    // The new token can be trained on.
    BatchPtr b = make_batch(1, 4, {1, 2, V, V + 1}, {0, 0, 1, 1}, {});
    TrainerPtr t = make_trainer(m.get(), train_config());
    LIMA_OK_OR_FAIL(lima_trainer_forward_backward(t.get(), b.get(), 2, nullptr));
    EXPECT_LIMA_ERR(lima_model_resize_vocab(m.get(), V + 3), LIMA_ERR_STATE, "trainer");
    t.reset();
    EXPECT_LIMA_ERR(lima_model_resize_vocab(m.get(), V), LIMA_ERR_INVALID_ARGUMENT, "smaller");
}

// ------------------------------------------------------------------ malformed inputs

class BadCheckpoint : public ::testing::Test {
   protected:
    std::string dir;
    void SetUp() override {
        dir = temp_dir(::testing::UnitTest::GetInstance()->current_test_info()->name());
        ModelPtr m = make_model(tiny_config(), 6);
        ASSERT_EQ(lima_model_save(m.get(), dir.c_str(), LIMA_DTYPE_F32, 0), LIMA_OK) << lima_last_error();
        saved_config = read_all(dir + "/config.json");
    }
    std::string saved_config;
    // config.json as saved, with `from` replaced by `to`
    void config_with(const std::string &from, const std::string &to) {
        std::string c = saved_config;
        c.replace(c.find(from), from.size(), to);
        write_text(dir + "/config.json", c);
    }
    void expect_load_error(int status, const std::string &needle) {
        lima_model *m = nullptr;
        EXPECT_LIMA_ERR(lima_model_load(dir.c_str(), "cpu", &m), status, needle);
        EXPECT_EQ(m, nullptr);
    }
    // Rewrites model.safetensors with one tensor changed by `edit`.
    void rewrite(const std::function<void(std::vector<lima::StWriteItem> &, std::vector<std::vector<float>> &)> &edit) {
        lima::StFile f = lima::st_open(dir + "/model.safetensors");
        std::vector<std::vector<float>> data;
        std::vector<lima::StWriteItem> items;
        for (auto &[name, e] : f.tensors) {
            data.emplace_back(size_t(e.numel()));
            lima::st_read_f32(f, e, data.back().data(), e.numel());
        }
        size_t i = 0;
        for (auto &[name, e] : f.tensors) items.push_back({name, e.shape, data[i++].data()});
        edit(items, data);
        lima::st_write(dir + "/model.safetensors", items, "F32", {{"format", "pt"}});
    }
};

TEST_F(BadCheckpoint, MissingDirectoryConfigOrWeights) {
    const std::string real = dir;
    dir = real + "/nope";
    expect_load_error(LIMA_ERR_IO, "does not exist");
    dir = real;
    std::filesystem::remove(dir + "/model.safetensors");
    expect_load_error(LIMA_ERR_IO, "neither model.safetensors nor model.safetensors.index.json");
    std::filesystem::remove(dir + "/config.json");
    expect_load_error(LIMA_ERR_IO, "no config.json");
}

TEST_F(BadCheckpoint, ConfigNotJsonOrMissingKeyOrUnsupported) {
    const std::string cfg = read_all(dir + "/config.json");
    write_text(dir + "/config.json", "{\"vocab_size\": 23,");
    expect_load_error(LIMA_ERR_FORMAT, "config.json: not valid JSON");
    // the fuzzer's find: a number too large for a double is nlohmann's out_of_range, not parse_error
    write_text(dir + "/config.json", "{\"vocab_size\": 388e838}");
    expect_load_error(LIMA_ERR_FORMAT, "config.json: not valid JSON");
    write_text(dir + "/config.json", "{\"vocab_size\": 23}");
    expect_load_error(LIMA_ERR_FORMAT, "missing required key \"hidden_size\"");
    std::string bad = cfg;
    bad.replace(bad.find("\"num_key_value_heads\": 2"), 24, "\"num_key_value_heads\": 3");
    write_text(dir + "/config.json", bad);
    expect_load_error(LIMA_ERR_INVALID_ARGUMENT, "num_key_value_heads (3) must be > 0 and divide num_attention_heads (4)");
    auto scaling = [&](const std::string &to) {
        std::string c = cfg;
        c.replace(c.find("\"rope_scaling\": null"), 20, "\"rope_scaling\": " + to);
        write_text(dir + "/config.json", c);
    };
    scaling("{\"type\": \"dynamic\", \"factor\": 2.0}");
    expect_load_error(LIMA_ERR_UNSUPPORTED, "rope_scaling: rope_type \"dynamic\" is not supported (default, linear, llama3)");
    scaling("{\"rope_type\": \"llama3\", \"factor\": 8.0, \"high_freq_factor\": 4.0, \"original_max_position_embeddings\": 8192}");
    expect_load_error(LIMA_ERR_FORMAT, "rope_type \"llama3\" needs \"low_freq_factor\"");
    scaling("{\"rope_type\": \"linear\", \"factor\": 0.5}");
    expect_load_error(LIMA_ERR_INVALID_ARGUMENT, "rope_scaling.factor");
    scaling("{\"rope_type\": \"llama3\", \"factor\": 8.0, \"low_freq_factor\": 4.0, \"high_freq_factor\": 1.0, \"original_max_position_embeddings\": 8192}");
    expect_load_error(LIMA_ERR_INVALID_ARGUMENT, "high_freq_factor");
    scaling("[1, 2]");
    expect_load_error(LIMA_ERR_FORMAT, "rope_scaling must be an object");
    // the old key name "type" and linear scaling load, and the scaling survives a save and a reload
    scaling("{\"type\": \"linear\", \"factor\": 2.0}");
    {
        lima_model *raw = nullptr;
        LIMA_OK_OR_FAIL(lima_model_load(dir.c_str(), "cpu", &raw));
        ModelPtr m(raw);
        const std::string again = dir + "-saved";
        LIMA_OK_OR_FAIL(lima_model_save(m.get(), again.c_str(), LIMA_DTYPE_F32, 0));
        lima_model *raw2 = nullptr;
        LIMA_OK_OR_FAIL(lima_model_load(again.c_str(), "cpu", &raw2));
        ModelPtr m2(raw2);
        lima_model_config c2;
        LIMA_OK_OR_FAIL(lima_model_get_config(m2.get(), &c2));
        EXPECT_EQ(c2.rope_type, LIMA_ROPE_LINEAR);
        EXPECT_FLOAT_EQ(c2.rope_factor, 2.0f);
        std::filesystem::remove_all(again);
    }
    bad = cfg;
    bad.replace(bad.find("\"hidden_size\": 16"), 17, "\"hidden_size\": \"16\"");
    write_text(dir + "/config.json", bad);
    expect_load_error(LIMA_ERR_FORMAT, "\"hidden_size\" must be an integer");
}

TEST_F(BadCheckpoint, AbsurdSizesAndSpecialTokensOutsideTheVocabularyAreRefusedBeforeAllocating) {
    config_with("\"hidden_size\": 16", "\"hidden_size\": 1000000000");
    expect_load_error(LIMA_ERR_INVALID_ARGUMENT, "hidden_size 1000000000 is beyond what liblima supports");
    config_with("\"num_hidden_layers\": 2", "\"num_hidden_layers\": 100000");
    expect_load_error(LIMA_ERR_INVALID_ARGUMENT, "num_hidden_layers 100000 is beyond");
    config_with("\"vocab_size\": 23", "\"vocab_size\": 2147483647");
    expect_load_error(LIMA_ERR_INVALID_ARGUMENT, "vocab_size 2147483647 is beyond");
    // within each limit, but far more than this machine's memory: the bytes are named
    std::string huge = saved_config;
    huge.replace(huge.find("\"hidden_size\": 16"), 17, "\"hidden_size\": 65536");
    huge.replace(huge.find("\"num_hidden_layers\": 2"), 22, "\"num_hidden_layers\": 4096");
    write_text(dir + "/config.json", huge);
    expect_load_error(LIMA_ERR_INVALID_ARGUMENT, "GiB for its fp32 weights, more than this machine's");
    config_with("\"eos_token_id\": 2", "\"eos_token_id\": 23");
    expect_load_error(LIMA_ERR_INVALID_ARGUMENT, "eos_token_id 23 is outside the vocabulary [0, 23)");
}

// Numbers past what their field can hold are format errors naming the key or tensor, never wrapped
// or converted out of range (a fuzzer's finding: a shape of 2.7e38 reached an undefined conversion).
TEST_F(BadCheckpoint, NumbersPastTheirFieldsRangeAreRefusedNotConverted) {
    config_with("\"hidden_size\": 16", "\"hidden_size\": 18446744073709551615");
    expect_load_error(LIMA_ERR_FORMAT, "key \"hidden_size\" out of range: 18446744073709551615");
    config_with("\"eos_token_id\": 2", "\"eos_token_id\": [4294967298]");
    expect_load_error(LIMA_ERR_FORMAT, "key \"eos_token_id\" out of range: 4294967298");
    config_with("\"rms_norm_eps\": ", "\"rms_norm_eps\": 1e300, \"unused\": ");
    expect_load_error(LIMA_ERR_FORMAT, "key \"rms_norm_eps\" is out of a float's range: 1e+300");
    write_text(dir + "/config.json", saved_config);
    const std::string path = dir + "/model.safetensors";
    auto header = [&](const std::string &h) {  // a file of that header and no data
        std::string len(8, '\0');
        for (int i = 0; i < 8; ++i) len[i] = char((h.size() >> (8 * i)) & 0xff);
        write_text(path, len + h);
    };
    header("{\"w\": {\"dtype\": \"F32\", \"shape\": [277777777777777777777777777777777777777, 3], \"data_offsets\": [0, 0]}}");
    expect_load_error(LIMA_ERR_FORMAT, "tensor w: malformed entry: shape must hold whole numbers from 0 to 2^63 - 1, got 2.777777777777778e+38");
    header("{\"w\": {\"dtype\": \"F32\", \"shape\": [2.5], \"data_offsets\": [0, 10]}}");
    expect_load_error(LIMA_ERR_FORMAT, "shape must hold whole numbers from 0 to 2^63 - 1, got 2.5");
    header("{\"w\": {\"dtype\": \"F32\", \"shape\": [-1], \"data_offsets\": [0, 0]}}");
    expect_load_error(LIMA_ERR_FORMAT, "shape must hold whole numbers from 0 to 2^63 - 1, got -1");
    header("{\"w\": {\"dtype\": \"F32\", \"shape\": [1099511627776, 1099511627776], \"data_offsets\": [0, 0]}}");
    expect_load_error(LIMA_ERR_FORMAT, "tensor w: shape [1099511627776,1099511627776] has more than 2^56 elements");
    header("{\"w\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [18446744073709551615, 4]}}");
    expect_load_error(LIMA_ERR_FORMAT, "data_offsets must hold whole numbers from 0 to 2^63 - 1, got 18446744073709551615");
}

TEST_F(BadCheckpoint, NonFiniteWeightsAreRefusedNamingTheTensor) {
    rewrite([](std::vector<lima::StWriteItem> &items, std::vector<std::vector<float>> &data) {
        for (size_t i = 0; i < items.size(); ++i)
            if (items[i].name == "model.layers.1.mlp.up_proj.weight") data[i][7] = std::nanf("");
    });
    expect_load_error(LIMA_ERR_FORMAT, "tensor model.layers.1.mlp.up_proj.weight in " + dir + "/model.safetensors holds a non-finite value");
}

TEST_F(BadCheckpoint, ConfigThatDoesNotMatchTheWeights) {
    std::string cfg = read_all(dir + "/config.json");
    cfg.replace(cfg.find("\"intermediate_size\": 24"), 23, "\"intermediate_size\": 32");
    write_text(dir + "/config.json", cfg);
    expect_load_error(LIMA_ERR_SHAPE, "tensor model.layers.0.mlp.gate_proj.weight in " + dir + "/model.safetensors has shape [24, 16] but config.json");
    cfg.replace(cfg.find("\"intermediate_size\": 32"), 23, "\"intermediate_size\": 24");
    cfg.replace(cfg.find("\"num_hidden_layers\": 2"), 22, "\"num_hidden_layers\": 1");
    write_text(dir + "/config.json", cfg);
    expect_load_error(LIMA_ERR_SHAPE, "model.layers.1.");
}

TEST_F(BadCheckpoint, TruncatedSafetensors) {
    const std::string path = dir + "/model.safetensors";
    const auto size = std::filesystem::file_size(path);
    std::filesystem::resize_file(path, size - 100);
    expect_load_error(LIMA_ERR_FORMAT, "truncated");
    std::filesystem::resize_file(path, 5);
    expect_load_error(LIMA_ERR_FORMAT, "truncated safetensors file");
    write_text(path, std::string("\xff\xff\xff\x00\x00\x00\x00\x00{}", 10));
    expect_load_error(LIMA_ERR_FORMAT, "header length");
}

TEST_F(BadCheckpoint, HeaderNotJsonOrBadOffsets) {
    const std::string path = dir + "/model.safetensors";
    std::string bytes = read_all(path);
    bytes[9] = '#';
    write_text(path, bytes);
    expect_load_error(LIMA_ERR_FORMAT, "header is not valid JSON");
    // the same overflow in a safetensors header
    const std::string header = "{\"x\": 1e99999}";
    std::string overflow(8, '\0');
    for (int i = 0; i < 8; ++i) overflow[i] = char((header.size() >> (8 * i)) & 0xff);
    write_text(path, overflow + header);
    expect_load_error(LIMA_ERR_FORMAT, "header is not valid JSON");
}

TEST_F(BadCheckpoint, MissingExtraOrWrongShapeTensor) {
    rewrite([](auto &items, auto &) {
        items.erase(std::remove_if(items.begin(), items.end(), [](auto &i) { return i.name == "model.norm.weight"; }), items.end());
    });
    expect_load_error(LIMA_ERR_FORMAT, "tensor model.norm.weight is missing from " + dir + "/model.safetensors");

    SetUp();
    static std::vector<float> extra(16, 1.0f);
    rewrite([](auto &items, auto &) { items.push_back({"model.layers.9.input_layernorm.weight", {16}, extra.data()}); });
    expect_load_error(LIMA_ERR_SHAPE, "model.layers.9.input_layernorm.weight");

    SetUp();
    rewrite([](auto &items, auto &) {
        for (auto &i : items)
            if (i.name == "model.norm.weight") i.shape = {4, 4};
    });
    expect_load_error(LIMA_ERR_SHAPE, "tensor model.norm.weight in " + dir + "/model.safetensors has shape [4, 4]");
}

TEST_F(BadCheckpoint, UnsupportedDtypeNamesTheTensor) {
    std::string bytes = read_all(dir + "/model.safetensors");
    const auto at = bytes.find("\"F32\"", bytes.find("model.norm.weight"));
    bytes.replace(at, 5, "\"I32\"");
    write_text(dir + "/model.safetensors", bytes);
    expect_load_error(LIMA_ERR_UNSUPPORTED, "tensor model.norm.weight has dtype I32");
}

TEST_F(BadCheckpoint, BrokenShardIndex) {
    ModelPtr m = make_model(tiny_config(), 6);
    LIMA_OK_OR_FAIL(lima_model_save(m.get(), dir.c_str(), LIMA_DTYPE_F32, 4096));
    write_text(dir + "/model.safetensors.index.json", "{\"weight_map\": 3}");
    expect_load_error(LIMA_ERR_FORMAT, "model.safetensors.index.json: malformed index");
    write_text(dir + "/model.safetensors.index.json", "{\"weight_map\": {\"model.norm.weight\": \"gone.safetensors\"}}");
    expect_load_error(LIMA_ERR_IO, "gone.safetensors");
}

TEST_F(BadCheckpoint, FailedSaveLeavesTheEarlierCheckpointIntact) {
    const std::string before = read_all(dir + "/model.safetensors");
    ModelPtr m = make_model(tiny_config(), 7);
    // Block the temporary file's path with a directory: the write fails (even for root).
    const std::string tmp = dir + "/model.safetensors.tmp-" + std::to_string(::getpid());
    std::filesystem::create_directory(tmp);
    EXPECT_LIMA_ERR(lima_model_save(m.get(), dir.c_str(), LIMA_DTYPE_F32, 0), LIMA_ERR_IO, "cannot open " + tmp);
    std::filesystem::remove(tmp);
    EXPECT_TRUE(read_all(dir + "/model.safetensors") == before) << "the earlier checkpoint was modified";
    EXPECT_LIMA_ERR(lima_model_save(m.get(), (dir + "/model.safetensors/sub").c_str(), LIMA_DTYPE_F32, 0), LIMA_ERR_IO,
                    "cannot create checkpoint directory");
    EXPECT_LIMA_ERR(lima_model_save(m.get(), dir.c_str(), 9, 0), LIMA_ERR_INVALID_ARGUMENT, "unknown dtype 9");
    EXPECT_TRUE(read_all(dir + "/model.safetensors") == before) << "the earlier checkpoint was modified";
}

TEST(OptimiserState, RejectsAnotherModelsStateAndLeavesTheTrainerAsItWas) {
    ModelPtr a = make_model(tiny_config(), 1);
    lima_model_config bigger = tiny_config();
    bigger.intermediate_size = 32;
    ModelPtr b = make_model(bigger, 1);
    TrainerPtr ta = make_trainer(a.get(), train_config()), tb = make_trainer(b.get(), train_config());
    const std::string dir = temp_dir("optstate");
    LIMA_OK_OR_FAIL(lima_trainer_save_state(ta.get(), (dir + "/a.safetensors").c_str()));
    LIMA_OK_OR_FAIL(lima_trainer_step(tb.get(), 0.0f, nullptr));
    EXPECT_LIMA_ERR(lima_trainer_load_state(tb.get(), (dir + "/a.safetensors").c_str()), LIMA_ERR_SHAPE, "parameters");
    int64_t step = 0;
    lima_trainer_get_step(tb.get(), &step);
    EXPECT_EQ(step, 1);
    ModelPtr m = make_model(tiny_config(), 1);
    LIMA_OK_OR_FAIL(lima_model_save(m.get(), dir.c_str(), LIMA_DTYPE_F32, 0));
    EXPECT_LIMA_ERR(lima_trainer_load_state(ta.get(), (dir + "/model.safetensors").c_str()), LIMA_ERR_FORMAT,
                    "not a liblima optimiser state");
    EXPECT_LIMA_ERR(lima_trainer_load_state(ta.get(), (dir + "/none.safetensors").c_str()), LIMA_ERR_IO, "none.safetensors");
}

}  // namespace
