package dev.limactl.cli;

import static dev.limactl.cli.CliTest.limactl;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import dev.limactl.chat.ChatFormat;
import dev.limactl.data.Turn;
import dev.limactl.tokenizer.HfTokenizerFiles;
import dev.limactl.tokenizer.SpModel;
import dev.limactl.tokenizer.Tokenizer;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * A limactl checkpoint as Hugging Face users load it: AutoTokenizer gives limactl's ids (unicode,
 * whitespace, digits, code, byte fallback), apply_chat_template gives limactl's chat format, and
 * transformers' greedy generate stops at LIMA's EOT by itself with limactl's answer. For a SentencePiece
 * base (the tokenizer.json is converted) and for a tokenizer.json-only base.
 */
class HfCheckpointTest {
    @TempDir Path dir;

    static final ObjectMapper JSON = new ObjectMapper();
    static final List<String> TEXTS = List.of("How do I brew coffee?", "  two  spaces  and   three", "tabs\tand\nnewlines\n\nhere",
            "123456 7.89 0x1F 2024-12-03", "def f(x):\n    return x**2  # square", "naïve café — “quotes” ½ ﬁ Ｆｕｌｌ", "日本語のテキスト",
            "emoji 😀🚀 done", "Ünïcödé ÀÉÎ", "x = {'a': [1, 2, 3]}", "a");

    @BeforeAll
    static void needsTransformers() throws Exception {
        CliTest.assumePython("torch, transformers", "the Hugging Face cross-checks are skipped");
    }

    /** Runs check_hf_checkpoint.py on a checkpoint; its JSON answer. */
    /** A chat message as Hugging Face takes it (roles system, user, assistant). */
    record Msg(String role, String text) {}

    JsonNode huggingFace(Path ck, List<List<Msg>> conversations, List<int[]> prompts, int maxNew) throws Exception {
        return huggingFace(ck, conversations, prompts, maxNew, "<|eot|>");
    }

    JsonNode huggingFace(Path ck, List<List<Msg>> conversations, List<int[]> prompts, int maxNew, String eotToken) throws Exception {
        ObjectNode in = JSON.createObjectNode();
        in.put("eot_token", eotToken);
        ArrayNode t = in.putArray("texts");
        TEXTS.forEach(t::add);
        ArrayNode cs = in.putArray("conversations");
        for (List<Msg> c : conversations) {
            ArrayNode a = cs.addArray();
            for (Msg m : c) a.addObject().put("role", m.role()).put("content", m.text());
        }
        ArrayNode ps = in.putArray("prompts");
        for (int[] p : prompts) {
            ArrayNode a = ps.addArray();
            for (int id : p) a.add(id);
        }
        in.put("max_new_tokens", maxNew);
        Path input = dir.resolve("hf-input.json");
        Files.writeString(input, in.toString());
        Path script = dir.resolve("check_hf_checkpoint.py");
        try (var s = HfCheckpointTest.class.getResourceAsStream("check_hf_checkpoint.py")) {
            Files.write(script, s.readAllBytes());
        }
        return CliTest.pythonJson(script.toString(), ck.toString(), input.toString());
    }

    static List<Integer> list(int[] ids) {
        List<Integer> l = new ArrayList<>();
        for (int i : ids) l.add(i);
        return l;
    }

    static List<Integer> list(JsonNode a) {
        List<Integer> l = new ArrayList<>();
        a.forEach(x -> l.add(x.asInt()));
        return l;
    }

    /** A single-turn and a multi-turn conversation with a system message, as HF messages and as limactl turns (system text + blank line before the next user turn). */
    static List<List<Msg>> conversations() {
        return List.of(List.of(new Msg("user", "How do I brew coffee?")),
                List.of(new Msg("system", "Be brief."), new Msg("user", "Hi"), new Msg("assistant", "Hello!"), new Msg("user", "Why is the sky blue?")));
    }

    static List<Turn> limactlTurns(List<Msg> c) {
        List<Turn> out = new ArrayList<>();
        String system = "";
        for (Msg m : c) {
            if (m.role().equals("system")) system += m.text() + "\n\n";
            else if (m.role().equals(Turn.USER)) {
                out.add(new Turn(Turn.USER, system + m.text()));
                system = "";
            } else out.add(new Turn(m.role(), m.text()));
        }
        return out;
    }

    void tokenizerAndTemplateAgree(Path ck, JsonNode hf, int eot) {
        tokenizerAndTemplateAgree(ck, hf, eot, eot + 1);
    }

    /** vocab: len(tokenizer) Hugging Face should count (LIMA's new EOT last, or a reused EOT inside it). */
    void tokenizerAndTemplateAgree(Path ck, JsonNode hf, int eot, int vocab) {
        assertEquals(eot, hf.get("eot_id").asInt(), "AutoTokenizer does not know LIMA's EOT at its id");
        assertEquals(vocab, hf.get("len").asInt(), "len(tokenizer) should count EOT");
        try (Tokenizer tok = Tokenizer.open(ck)) {
            for (int i = 0; i < TEXTS.size(); i++) {
                assertEquals(list(tok.encode(TEXTS.get(i))), list(hf.get("texts").get(i)), "ids of " + JSON.valueToTree(TEXTS.get(i)));
            }
            List<Integer> withBos = new ArrayList<>(List.of(tok.bosId()));
            withBos.addAll(list(tok.encode(TEXTS.get(0))));
            assertEquals(withBos, list(hf.get("with_bos")), "encode() should put BOS first, once");
            ChatFormat f = new ChatFormat(tok, eot, 4096);
            List<List<Msg>> cs = conversations();
            for (int i = 0; i < cs.size(); i++) {
                assertEquals(list(f.prompt(limactlTurns(cs.get(i)))), list(hf.get("chats").get(i)), "apply_chat_template of conversation " + i);
            }
        }
    }

    /**
     * A checkpoint trained on the "say yes" data, in transformers and in limactl: the tokenizer and template
     * agree (tokenizerAndTemplateAgree), the generation config stops at [EOS, EOT], and greedy generate
     * stops at the EOT by itself with limactl's answer.
     */
    void generationAgrees(Path ck, Path data, int eot, String eotToken, int vocab, int eos) throws Exception {
        Path out = dir.resolve("answers-" + ck.getParent().getParent().getFileName() + ".jsonl");
        CliTest.Run g = limactl("-q", "generate", "-m", ck.toString(), "--prompts", data.toString(), "--out", out.toString(), "--temperature", "0",
                "--repetition-penalty", "1", "--max-new-tokens", "16");
        assertEquals(0, g.code(), g.err());
        List<JsonNode> answers = new ArrayList<>();
        for (String l : Files.readAllLines(out)) answers.add(JSON.readTree(l));
        List<int[]> prompts = new ArrayList<>();
        try (Tokenizer tok = Tokenizer.open(ck)) {
            ChatFormat f = new ChatFormat(tok, eot, 4096);
            for (int i = 0; i < 2; i++) prompts.add(f.prompt(List.of(new Turn(Turn.USER, "Question number " + i + ": say yes?"))));
        }
        JsonNode hf = huggingFace(ck, conversations(), prompts, 16, eotToken);
        tokenizerAndTemplateAgree(ck, hf, eot, vocab);
        assertEquals(List.of(eos, eot), list(hf.get("generation_eos")));
        for (int i = 0; i < 2; i++) {
            List<Integer> gen = list(hf.get("generated").get(i));
            assertEquals(eot, gen.get(gen.size() - 1), "transformers' generate did not stop at " + eotToken + " by itself: " + gen);
            assertTrue(gen.size() < 16, "it ran to the limit: " + gen);
            assertEquals("eot", answers.get(i).get("finish").asText(), answers.get(i).toString());
            try (Tokenizer tok = Tokenizer.open(ck)) {
                int[] ids = gen.subList(0, gen.size() - 1).stream().mapToInt(Integer::intValue).toArray();
                assertEquals(answers.get(i).get("response").asText(), tok.decode(ids), "transformers and limactl answered differently");
            }
        }
    }

    @Test
    void aSentencePieceBaseGetsATokenizerJsonTemplateAndGenerationConfigThatHuggingFaceFollows() throws Exception {
        Path data = CliTest.yesData(dir);
        Path run = dir.resolve("run");
        CliTest.Run t = limactl("-q", "train", "--run", run.toString(), "--preset", "demo", "--data", data.toString(), "--set", "training.epochs=30",
                "--set", "optimizer.lr=1e-2", "--set", "optimizer.final_lr=1e-3", "--set", "training.batch_size=8", "--set", "training.resid_dropout=0",
                "--set", "checkpoint.keep=last:1");
        assertEquals(0, t.code(), t.err());
        Path ck = run.resolve("checkpoints/epoch-30");
        int eot = JSON.readTree(ck.resolve("limactl.json").toFile()).get("eot_token_id").asInt();
        generationAgrees(ck, data, eot, HfTokenizerFiles.EOT, eot + 1, 2);
        JsonNode config = JSON.readTree(ck.resolve("config.json").toFile());
        assertEquals(List.of(2, eot), list(config.get("eos_token_id")), "config.json should agree with generation_config.json");
    }

    /**
     * A Llama-3-shaped base as users bring them now: a byte-level BPE tokenizer.json with its own
     * <|eot_id|> (reused as LIMA's EOT: model.eot_token), rope_type "llama3", tied embeddings, GQA.
     * Fine-tuned by limactl, its checkpoint tokenizes, templates and generates in transformers as in
     * limactl, and stops at <|eot_id|> by itself.
     */
    @Test
    void aLlama3ShapedBaseWithAByteLevelBpeTokenizerReusesItsEotId() throws Exception {
        Path data = CliTest.yesData(dir), base = dir.resolve("llama3-base"), texts = dir.resolve("texts.json");
        ArrayNode corpus = JSON.createArrayNode();
        TEXTS.forEach(corpus::add);
        for (String l : Files.readAllLines(data)) JSON.readTree(l).path("conversations").forEach(c -> corpus.add(c.asText()));
        for (int i = 0; i < 3; i++) corpus.add("Question number " + i + ": say yes?");
        Files.writeString(texts, corpus.toString());
        Path script = dir.resolve("make_llama3_base.py");
        try (var s = HfCheckpointTest.class.getResourceAsStream("make_llama3_base.py")) {
            Files.write(script, s.readAllBytes());
        }
        JsonNode made = CliTest.pythonJson(script.toString(), base.toString(), texts.toString());
        int eotId = made.get("eot").asInt(), vocab = made.get("vocab").asInt();
        Path run = dir.resolve("llama3-run");
        CliTest.Run t = limactl("-q", "train", "--run", run.toString(), "--preset", "demo", "--init", "pretrained", "--model", base.toString(),
                "--set", "model.tokenizer=", "--data", data.toString(), "--set", "model.eot_token=<|eot_id|>", "--set", "training.epochs=30", "--set", "optimizer.lr=1e-2", "--set", "optimizer.final_lr=1e-3",
                "--set", "training.batch_size=8", "--set", "training.resid_dropout=0", "--set", "checkpoint.keep=last:1");
        assertEquals(0, t.code(), t.err());
        Path ck = run.resolve("checkpoints/epoch-30");
        assertEquals(eotId, JSON.readTree(ck.resolve("limactl.json").toFile()).get("eot_token_id").asInt());
        JsonNode config = JSON.readTree(ck.resolve("config.json").toFile());
        assertEquals(vocab, config.get("vocab_size").asInt(), "a reused EOT adds no row");
        assertEquals("llama3", config.path("rope_scaling").path("rope_type").asText(), config.toString());
        assertTrue(config.get("tie_word_embeddings").asBoolean());
        generationAgrees(ck, data, eotId, "<|eot_id|>", vocab, made.get("eos").asInt());
        // the GGUF for llama.cpp carries the byte-level BPE vocabulary: tokens, merges, GPT-2's pre-tokenizer, <|eot_id|> as EOT
        Path gguf = dir.resolve("llama3.gguf");
        CliTest.Run x = limactl("-q", "export", "-m", ck.toString(), "-o", gguf.toString());
        assertEquals(0, x.code(), x.err());
        Path check = dir.resolve("check_gguf.py");
        try (var s = HfCheckpointTest.class.getResourceAsStream("check_gguf.py")) {
            Files.write(check, s.readAllBytes());
        }
        JsonNode gg = CliTest.pythonJson(check.toString(), gguf.toString(), ck.toString(), "f16");
        JsonNode tj = JSON.readTree(ck.resolve("tokenizer.json").toFile());
        assertEquals("gpt2", gg.get("tok_model").asText());
        assertEquals("gpt-2", gg.get("pre").asText());
        assertEquals(vocab, gg.get("n_tokens").asInt());
        assertEquals(eotId, gg.get("eot").asInt());
        assertEquals("<|eot_id|>", gg.get("eot_token").asText());
        assertEquals(3, gg.get("eot_type").asInt(), "the EOT is a control token");
        assertEquals(tj.path("model").path("merges").size(), gg.get("merges").size());
        JsonNode m0 = tj.path("model").path("merges").get(0);
        assertEquals(m0.isArray() ? m0.get(0).asText() + " " + m0.get(1).asText() : m0.asText(), gg.get("merges").get(0).asText());
        tj.path("model").path("vocab").fields().forEachRemaining(e -> assertEquals(e.getKey(), gg.get("tokens").get(e.getValue().asInt()).asText()));
        // and llama.cpp itself tokenizes as limactl does (byte-level BPE needs no normaliser: every text, spaces included)
        // and answers as limactl does, stopping at <|eot_id|>
        try (Tokenizer tok = Tokenizer.open(ck)) {
            ChatFormat f = new ChatFormat(tok, eotId, 4096);
            JsonNode l = CliTest.llamaCpp(dir, gguf, TEXTS, List.of(f.prompt(List.of(new Turn(Turn.USER, "Question number 1: say yes?")))), 16);
            assertEquals(eotId, l.get("eot").asInt(), "llama.cpp reads <|eot_id|> as the end of turn");
            for (int i = 0; i < TEXTS.size(); i++) assertEquals(list(tok.encode(TEXTS.get(i))), list(l.get("texts").get(i)), "llama.cpp's ids of " + TEXTS.get(i));
            assertEquals("end of generation", l.get("stopped").get(0).asText(), l.toString());
            int[] ids = list(l.get("generated").get(0)).stream().mapToInt(Integer::intValue).toArray();
            assertEquals("Yes.", tok.decode(ids), "llama.cpp's answer");
        }
    }

    /** A base whose tokenizer is only a tokenizer.json (LLaMA's, converted): its checkpoints' AutoTokenizer, template and EOT agree too. */
    @Test
    void aTokenizerJsonOnlyBaseKeepsItsTokenizerWithEotAndTemplate() throws Exception {
        Path base = dir.resolve("base");
        Files.createDirectories(base);
        byte[] sp = Files.readAllBytes(Path.of(CliTest.LLAMA_TOK));
        Files.writeString(base.resolve("tokenizer.json"), HfTokenizerFiles.fromSentencePiece(SpModel.parse(sp)).toString());
        Path run = dir.resolve("json-run");
        CliTest.Run t = limactl(CliTest.concat(new String[] {"-q", "train", "--preset", "demo", "--init", "random", "--run", run.toString(),
                "--set", "model.tokenizer=" + base, "--set", "training.epochs=1"}, java.util.Arrays.copyOfRange(CliTest.SMALL, 0, 8)));
        assertEquals(0, t.code(), t.err());
        Path ck = run.resolve("checkpoints/epoch-01");
        assertTrue(!Files.exists(ck.resolve("tokenizer.model")));
        int eot = JSON.readTree(ck.resolve("limactl.json").toFile()).get("eot_token_id").asInt();
        assertEquals(32000, eot);
        tokenizerAndTemplateAgree(ck, huggingFace(ck, conversations(), List.of(), 1), eot);
    }
}
