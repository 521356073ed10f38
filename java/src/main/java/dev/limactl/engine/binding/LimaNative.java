package dev.limactl.engine.binding;

import org.bytedeco.javacpp.BytePointer;
import org.bytedeco.javacpp.Loader;
import org.bytedeco.javacpp.Pointer;
import org.bytedeco.javacpp.PointerPointer;
import org.bytedeco.javacpp.annotation.ByPtrPtr;
import org.bytedeco.javacpp.annotation.Cast;
import org.bytedeco.javacpp.annotation.Const;
import org.bytedeco.javacpp.annotation.Opaque;
import org.bytedeco.javacpp.annotation.Platform;

/**
 * The JavaCPP binding of {@code cpp/include/lima/lima.h}: one native method per C function, one
 * class per struct or opaque handle. This is the only code in the project that touches JavaCPP;
 * everything else uses the {@code dev.limactl.engine} wrappers, which turn status codes into
 * {@link dev.limactl.engine.LimaException}s and own the handles.
 */
@Platform(include = "lima/lima.h", link = "lima@.1")
public final class LimaNative {
    static {
        Loader.load();
    }

    private LimaNative() {}

    /** The calling thread's last native error message. */
    public static String lastError() {
        return lima_last_error().getString(java.nio.charset.StandardCharsets.UTF_8);
    }

    public static String statusName(int status) {
        return lima_status_name(status).getString();
    }

    public static String versionString() {
        return lima_version_string().getString();
    }

    /** Frees the native struct memory now rather than at garbage collection. */
    public static void release(Pointer p) {
        p.close();
    }

    public static native int lima_abi_version();

    public static native @Cast("const char*") BytePointer lima_version_string();

    public static native @Cast("const char*") BytePointer lima_last_error();

    public static native @Cast("const char*") BytePointer lima_status_name(int status);

    public static native int lima_set_num_threads(int n);

    public static native int lima_get_num_threads();

    /** {@code lima_model_config}: the HF LlamaConfig fields liblima uses. */
    public static class lima_model_config extends Pointer {
        static {
            Loader.load();
        }

        public lima_model_config() {
            allocate();
        }

        private native void allocate();

        public native int vocab_size(); public native lima_model_config vocab_size(int v);
        public native int hidden_size(); public native lima_model_config hidden_size(int v);
        public native int intermediate_size(); public native lima_model_config intermediate_size(int v);
        public native int num_layers(); public native lima_model_config num_layers(int v);
        public native int num_heads(); public native lima_model_config num_heads(int v);
        public native int num_kv_heads(); public native lima_model_config num_kv_heads(int v);
        public native int head_dim(); public native lima_model_config head_dim(int v);
        public native int max_position_embeddings(); public native lima_model_config max_position_embeddings(int v);
        public native float rms_norm_eps(); public native lima_model_config rms_norm_eps(float v);
        public native float rope_theta(); public native lima_model_config rope_theta(float v);
        public native int tie_word_embeddings(); public native lima_model_config tie_word_embeddings(int v);
        public native int bos_token_id(); public native lima_model_config bos_token_id(int v);
        public native int eos_token_id(); public native lima_model_config eos_token_id(int v);
        public native int pad_token_id(); public native lima_model_config pad_token_id(int v);
        public native float initializer_range(); public native lima_model_config initializer_range(float v);
    }

    /** {@code lima_train_config}. */
    public static class lima_train_config extends Pointer {
        static {
            Loader.load();
        }

        public lima_train_config() {
            allocate();
        }

        private native void allocate();

        public native float beta1(); public native lima_train_config beta1(float v);
        public native float beta2(); public native lima_train_config beta2(float v);
        public native float eps(); public native lima_train_config eps(float v);
        public native float weight_decay(); public native lima_train_config weight_decay(float v);
        public native float grad_clip(); public native lima_train_config grad_clip(float v);
        public native float resid_dropout(); public native lima_train_config resid_dropout(float v);
        public native @Cast("uint64_t") long seed(); public native lima_train_config seed(long v);
        public native int recompute_activations(); public native lima_train_config recompute_activations(int v);
        public native int offload(); public native lima_train_config offload(int v);
    }

    /** {@code lima_fb_result}. */
    public static class lima_fb_result extends Pointer {
        static {
            Loader.load();
        }

        public lima_fb_result() {
            allocate();
        }

        private native void allocate();

        public native double loss_sum(); public native lima_fb_result loss_sum(double v);
        public native @Cast("int64_t") long num_targets(); public native lima_fb_result num_targets(long v);
    }

    /** {@code lima_step_result}. */
    public static class lima_step_result extends Pointer {
        static {
            Loader.load();
        }

        public lima_step_result() {
            allocate();
        }

        private native void allocate();

        public native double grad_norm(); public native lima_step_result grad_norm(double v);
        public native int clipped(); public native lima_step_result clipped(int v);
        public native double comm_seconds(); public native lima_step_result comm_seconds(double v);
        public native @Cast("int64_t") long step(); public native lima_step_result step(long v);
    }

    @Opaque
    public static class lima_model extends Pointer {
        public lima_model() {}
    }

    @Opaque
    public static class lima_trainer extends Pointer {
        public lima_trainer() {}
    }

    @Opaque
    public static class lima_batch extends Pointer {
        public lima_batch() {}
    }

    @Opaque
    public static class lima_comm extends Pointer {
        public lima_comm() {}
    }

    public static native int lima_comm_create(String backend, int rank, int world, String rendezvous, int timeoutMs,
                                              @ByPtrPtr lima_comm out);

    public static native int lima_comm_nccl_unique_id(@Cast("uint8_t*") byte[] out, int cap);

    public static native int lima_comm_create_nccl(int rank, int world, @Cast("const uint8_t*") byte[] uniqueId, int idLen, String device,
                                                   int timeoutMs, @ByPtrPtr lima_comm out);

    public static native void lima_comm_free(lima_comm c);

    public static native int lima_comm_plugin_select(String backend, String path);

    public static native int lima_comm_allreduce_sum(lima_comm c, float[] data, @Cast("int64_t") long n);

    public static native int lima_comm_allgather(lima_comm c, @Const float[] in, @Cast("int64_t") long n, float[] out);

    public static native int lima_comm_broadcast(lima_comm c, float[] data, @Cast("int64_t") long n, int root);

    public static native int lima_comm_barrier(lima_comm c);

    public static native int lima_comm_abort(lima_comm c);

    public static native int lima_trainer_set_comm(lima_trainer t, lima_comm c, int zeroStage);

    public static native int lima_trainer_set_micro_batch(lima_trainer t, int index);

    public static native int lima_trainer_skip_micro_batch(lima_trainer t);

    public static native int lima_trainer_gather_params(lima_trainer t, int root);

    public static native int lima_trainer_save_model(lima_trainer t, String dir, int dtype, @Cast("int64_t") long maxShardBytes, int root);

    public static native int lima_trainer_load_state_shards(lima_trainer t, @Cast("const char*const*") PointerPointer<?> paths, int n);

    /** Loads every rank's shard of an optimiser state; a native error throws through check. */
    public static void trainerLoadStateShards(lima_trainer t, java.util.List<String> paths, java.util.function.IntConsumer check) {
        try (PointerPointer<BytePointer> pp = new PointerPointer<>(paths.toArray(new String[0]))) {
            check.accept(lima_trainer_load_state_shards(t, pp, paths.size()));
        }
    }

    /**
     * The Gloo communicator plugin this jar carries (built where Gloo was installed), extracted to
     * JavaCPP's cache, or null when the jar has none.
     */
    public static java.io.File bundledGlooPlugin() throws java.io.IOException {
        return Loader.cacheResource(LimaNative.class,
                "comm/" + System.getProperty("os.name") + "-" + System.getProperty("os.arch") + "/liblima_gloo.so");
    }

    public static native void lima_model_config_init(lima_model_config cfg);

    public static native int lima_model_create(@Const lima_model_config cfg, String device, @Cast("uint64_t") long seed,
                                               @ByPtrPtr lima_model out);

    public static native int lima_model_load(String dir, String device, @ByPtrPtr lima_model out);

    public static native int lima_model_create_hollow(@Const lima_model_config cfg, @ByPtrPtr lima_model out);

    public static native int lima_model_load_hollow(String dir, @ByPtrPtr lima_model out);

    public static native int lima_model_to_device(lima_model m, String device);

    public static native int lima_model_save(@Const lima_model m, String dir, int dtype, @Cast("int64_t") long maxShardBytes);

    public static native void lima_model_free(lima_model m);

    public static native int lima_model_get_config(@Const lima_model m, lima_model_config out);

    public static native int lima_model_num_params(@Const lima_model m, @Cast("int64_t*") long[] out);

    public static native int lima_model_resize_vocab(lima_model m, int newVocab);

    public static native int lima_model_num_tensors(@Const lima_model m, int[] out);

    public static native int lima_model_tensor_info(@Const lima_model m, int index, @Cast("char*") byte[] nameBuf, int nameCap,
                                                    @Cast("int64_t*") long[] shape, int[] ndim);

    public static native int lima_model_read_tensor(@Const lima_model m, String name, float[] out, @Cast("int64_t") long n);

    public static native int lima_model_write_tensor(lima_model m, String name, @Const float[] in, @Cast("int64_t") long n);

    public static native int lima_model_add_adapter(lima_model m, int r, float alpha, float dropout, @Cast("uint32_t") int targets,
                                                    @Const int[] tokens, int nTokens, int rslora, @Cast("uint64_t") long seed);

    public static native int lima_model_load_adapter(lima_model m, String dir);

    public static native int lima_model_save_adapter(@Const lima_model m, String dir, String baseModel);

    public static native int lima_model_merge_adapter(lima_model m);

    public static native int lima_model_quantize_nf4(lima_model m, int doubleQuant);

    public static native int lima_model_weight_bytes(@Const lima_model m, @Cast("int64_t*") long[] out);

    public static native int lima_model_remove_adapter(lima_model m);

    public static native int lima_model_adapter_info(@Const lima_model m, int[] r, float[] alpha, float[] dropout,
                                                     @Cast("uint32_t*") int[] targets, @Cast("int64_t*") long[] numParams);

    public static native int lima_batch_create(int rows, int seqLen, @ByPtrPtr lima_batch out);

    public static native int lima_batch_set(lima_batch b, @Const int[] tokens, @Cast("const uint8_t*") byte[] lossMask,
                                            @Const int[] segmentIds);

    public static native int lima_batch_num_targets(@Const lima_batch b, @Cast("int64_t*") long[] out);

    public static native void lima_batch_free(lima_batch b);

    public static native int lima_model_logits(lima_model m, @Const lima_batch b, float[] out, @Cast("int64_t") long n);

    public static native int lima_model_token_logprobs(lima_model m, @Const lima_batch b, float[] out, @Cast("int64_t") long n);

    public static native void lima_train_config_init(lima_train_config cfg);

    public static native int lima_trainer_create(lima_model m, @Const lima_train_config cfg, @ByPtrPtr lima_trainer out);

    public static native void lima_trainer_free(lima_trainer t);

    public static native int lima_trainer_forward_backward(lima_trainer t, @Const lima_batch b, @Cast("int64_t") long stepTargets,
                                                           lima_fb_result out);

    public static native int lima_trainer_step(lima_trainer t, float lr, lima_step_result out);

    public static native int lima_trainer_zero_grad(lima_trainer t);

    public static native int lima_trainer_get_step(@Const lima_trainer t, @Cast("int64_t*") long[] out);

    public static native int lima_trainer_read_grad(@Const lima_trainer t, String name, float[] out, @Cast("int64_t") long n);

    public static native int lima_trainer_save_state(@Const lima_trainer t, String path);

    public static native int lima_trainer_load_state(lima_trainer t, String path);

    public static native float lima_resid_dropout_rate(float pMax, int layer, int numLayers);

    /** {@code lima_device_info}. */
    public static class lima_device_info extends Pointer {
        static {
            Loader.load();
        }

        public lima_device_info(long n) {
            allocateArray(n);
        }

        private native void allocateArray(long n);

        @Override
        public lima_device_info position(long p) {
            return (lima_device_info) super.position(p);
        }

        @org.bytedeco.javacpp.annotation.MemberGetter public native @Cast("char*") BytePointer name();
        public native @Cast("int64_t") long total_memory(); public native lima_device_info total_memory(long v);
        public native @Cast("int64_t") long free_memory(); public native lima_device_info free_memory(long v);
        public native int compute_major(); public native lima_device_info compute_major(int v);
        public native int compute_minor(); public native lima_device_info compute_minor(int v);
        public native int runtime_version(); public native lima_device_info runtime_version(int v);
        public native int driver_version(); public native lima_device_info driver_version(int v);
    }

    public static native int lima_cuda_devices(lima_device_info out, int cap, int[] count);

    public static native @Cast("const char*") BytePointer lima_cuda_plugin_path();

    /** The CUDA devices as (name, total, free, cc major, cc minor, runtime, driver) rows; a native error throws. */
    public static java.util.List<Object[]> cudaDevices(java.util.function.IntConsumer check) {
        lima_device_info d = new lima_device_info(16);
        try {
            int[] n = new int[1];
            check.accept(lima_cuda_devices(d, 16, n));
            java.util.List<Object[]> out = new java.util.ArrayList<>();
            for (int i = 0; i < Math.min(n[0], 16); i++) {
                lima_device_info x = d.getPointer(i);
                out.add(new Object[] {x.name().getString(), x.total_memory(), x.free_memory(), x.compute_major(), x.compute_minor(),
                        x.runtime_version(), x.driver_version()});
            }
            return out;
        } finally {
            d.close();
        }
    }

    public static String cudaPluginPath() {
        return lima_cuda_plugin_path().getString();
    }

    public static native int lima_cuda_versions(@Cast("char*") byte[] out, int cap);

    public static native int lima_cuda_driver_version(int[] version);

    public static native int lima_cuda_plugin_select(@Cast("const char*const*") PointerPointer<?> paths, int n, int[] chosen);

    /** Loads the first of the plugin files that loads; returns its index, a native error throws through check. */
    public static int cudaPluginSelect(java.util.List<String> paths, java.util.function.IntConsumer check) {
        try (PointerPointer<BytePointer> pp = new PointerPointer<>(paths.toArray(new String[0]))) {
            int[] chosen = {-1};
            check.accept(lima_cuda_plugin_select(pp, paths.size(), chosen));
            return chosen[0];
        }
    }

    /**
     * The CUDA plugin built for CUDA {@code major} that this jar carries, extracted to JavaCPP's cache
     * beside liblima, or null when the jar has none for that major.
     */
    public static java.io.File bundledCudaPlugin(int major) throws java.io.IOException {
        // where the build put it: cuda/<os.name>-<os.arch>/ beside this class (java/pom.xml)
        return Loader.cacheResource(LimaNative.class,
                "cuda/" + System.getProperty("os.name") + "-" + System.getProperty("os.arch") + "/liblima_cuda" + major + ".so");
    }

    /** {@code lima_memory_plan}. */
    public static class lima_memory_plan extends Pointer {
        static {
            Loader.load();
        }

        public lima_memory_plan() {
            allocate();
        }

        private native void allocate();

        @org.bytedeco.javacpp.annotation.MemberGetter public native @Cast("int64_t") long weights();
        @org.bytedeco.javacpp.annotation.MemberGetter public native @Cast("int64_t") long optimizer();
        @org.bytedeco.javacpp.annotation.MemberGetter public native @Cast("int64_t") long activations();
        @org.bytedeco.javacpp.annotation.MemberGetter public native @Cast("int64_t") long workspace();
        @org.bytedeco.javacpp.annotation.MemberGetter public native @Cast("int64_t") long total();
        @org.bytedeco.javacpp.annotation.MemberGetter public native @Cast("int64_t") long device_free();
        @org.bytedeco.javacpp.annotation.MemberGetter public native @Cast("int64_t") long device_total();
        @org.bytedeco.javacpp.annotation.MemberGetter public native @Cast("int64_t") long peak();
        @org.bytedeco.javacpp.annotation.MemberGetter public native @Cast("int64_t") long host();
    }

    public static native int lima_trainer_plan_memory(lima_trainer t, int rows, int seqLen, lima_memory_plan out);

    /** {@code lima_sampling}. */
    public static class lima_sampling extends Pointer {
        static {
            Loader.load();
        }

        public lima_sampling() {
            allocate();
        }

        private native void allocate();

        public native float temperature(); public native lima_sampling temperature(float v);
        public native float top_p(); public native lima_sampling top_p(float v);
        public native int top_k(); public native lima_sampling top_k(int v);
        public native float repetition_penalty(); public native lima_sampling repetition_penalty(float v);
        public native int penalty_scope(); public native lima_sampling penalty_scope(int v);
    }

    @Opaque
    public static class lima_generator extends Pointer {
        public lima_generator() {}
    }

    public static native void lima_sampling_init(lima_sampling s);

    public static native int lima_generator_create(lima_model m, int maxRows, int maxLen, @ByPtrPtr lima_generator out);

    public static native void lima_generator_free(lima_generator g);

    public static native int lima_generator_start(lima_generator g, int rows, @Const int[] tokens, @Const int[] lengths,
                                                  @Cast("const uint64_t*") long[] seeds);

    public static native int lima_generator_step(lima_generator g, @Const lima_sampling s, @Cast("const uint8_t*") byte[] active,
                                                 int[] outTokens);

    public static native int lima_generator_logits(@Const lima_generator g, float[] out, @Cast("int64_t") long n);

    public static native int lima_sample_logits(@Const float[] logits, int vocab, @Const lima_sampling s, @Const int[] penalized,
                                                int numPenalized, @Cast("uint64_t") long seed, @Cast("uint64_t") long counter,
                                                float[] probsOut, int[] tokenOut);
}
