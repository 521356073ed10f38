package dev.limactl.data.curate;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import dev.limactl.data.ArrowExamples;
import dev.limactl.data.DataFormatException;
import dev.limactl.data.Example;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Random;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** The pipeline on the real samples in ../shared/data. */
class CuratorTest {
    static final Path SHARED = Path.of("../../../shared/data");
    @TempDir Path dir;

    static Curator.Result run(String preset) {
        return new Curator(Recipe.parse(Recipe.preset(preset), preset), SHARED, m -> { }).run();
    }

    @Test
    void sharedSampleRecipeRunsEverySourceAndWritesSplitsManifestAndRejections() throws Exception {
        Recipe recipe = Recipe.parse(Recipe.preset("shared-sample"), "shared-sample");
        Curator.Result r = new Curator(recipe, SHARED, m -> { }).run();
        Map<String, Integer> bySource = new HashMap<>();
        r.splits().get("train").forEach(e -> bySource.merge(e.source(), 1, Integer::sum));
        assertEquals(40, bySource.get("wikihow"));
        assertEquals(20, bySource.get("writingprompts"));
        assertEquals(8, bySource.get("super-ni"));
        assertTrue(bySource.get("stackexchange") > 20, bySource.toString());
        assertEquals(6, r.splits().get("dev").size());
        // The train block samples the same top questions as the dev block: those are dropped from train.
        assertTrue(r.rejected().stream().anyMatch(x -> x.rule().equals("exact-duplicate")));
        Curator.write(r, dir, s -> s.split("\\s+").length, recipe);
        assertEquals(r.splits().get("train"), ArrowExamples.read(dir.resolve("train.arrow")));
        JsonNode m = new ObjectMapper().readTree(dir.resolve("manifest.json").toFile());
        assertEquals(r.splits().get("train").size(), m.at("/splits/train/count").asInt());
        assertTrue(m.at("/splits/train/sources/stackexchange/response_chars_mean").asDouble() >= 400);
        assertTrue(m.at("/splits/train/sources/wikihow/prompt_tokens_mean").asDouble() > 0);
        assertTrue(m.at("/notes").toString().contains("no category column"), m.toString());
        List<String> rej = Files.readAllLines(dir.resolve("rejected.jsonl"));
        assertEquals(r.rejected().size(), rej.size());
        assertTrue(rej.stream().anyMatch(l -> l.contains("\"rule\":\"answer-too-short\"")));
    }

    @Test
    void sameRecipeSameInputsSameSeedGiveByteIdenticalFiles() throws Exception {
        Recipe recipe = Recipe.parse(Recipe.preset("shared-sample"), "shared-sample");
        Curator.write(new Curator(recipe, SHARED, m -> { }).run(), dir.resolve("a"), null, recipe);
        Curator.write(new Curator(recipe, SHARED, m -> { }).run(), dir.resolve("b"), null, recipe);
        for (String f : List.of("train.arrow", "dev.arrow", "manifest.json", "rejected.jsonl")) {
            assertArrayEquals(Files.readAllBytes(dir.resolve("a").resolve(f)), Files.readAllBytes(dir.resolve("b").resolve(f)), f);
        }
        Recipe other = Recipe.parse(Recipe.preset("shared-sample").replace("seed: 42", "seed: 43"), "x");
        Curator.write(new Curator(other, SHARED, m -> { }).run(), dir.resolve("c"), null, other);
        assertFalse(java.util.Arrays.equals(Files.readAllBytes(dir.resolve("a/train.arrow")), Files.readAllBytes(dir.resolve("c/train.arrow"))));
    }

    @Test
    void wikiHowArticlesWritingPromptsAndSuperNiFollowThePapersRules() {
        Curator.Result r = run("shared-sample");
        for (Example e : r.splits().get("train")) {
            String p = e.turns().get(0).text(), a = e.turns().get(1).text();
            switch (e.source()) {
                case "wikihow" -> {
                    assertTrue(p.endsWith("?"), p);
                    assertFalse(p.contains(":") || p.contains("wikiHow"), p);
                    assertFalse(a.startsWith("This article"), a);
                    assertTrue(a.startsWith("1. "), a);
                }
                case "writingprompts" -> {
                    assertFalse(p.startsWith("["), p);
                    assertFalse(a.contains(" n't") || a.contains(" ,") || a.contains("``"), a);
                }
                case "super-ni" -> assertTrue(p.contains("\n\n") && !a.isBlank(), p);
                default -> { }
            }
        }
        assertEquals("How to Remove Lint from Clothes?", WikiHowSource.prompt("How to Remove Lint from Clothes: 14+ Easy Methods"));
        assertEquals("How to Take Care of Your Skin?", WikiHowSource.prompt("5 Ways to Take Care of Your Skin - wikiHow"));
        assertEquals("The following answer shows how.", WikiHowSource.leadIn("This article shows how."));
        assertEquals("She said \"don't go,\" and left.", WritingPromptsSource.detokenize("She said `` do n't go , '' and left ."));
        assertEquals("A Song and a Story", WritingPromptsSource.stripTags("[ FF ] [ MP ] A Song and a Story"));
    }

    @Test
    void superNiToleratesTheRealBareNaN() {
        List<SuperNiSource.Task> tasks = SuperNiSource.read(SHARED.resolve("natural-instructions/tasks"));
        assertEquals(8, tasks.size());
        assertTrue(tasks.stream().anyMatch(t -> t.name().startsWith("task045")));
        assertTrue(tasks.stream().allMatch(t -> !t.instances().isEmpty()));
    }

    @Test
    void temperatureSamplingDrawsExchangesInProportionToSizeToTheOneOverT() {
        Map<String, List<Integer>> ex = new LinkedHashMap<>();
        int[] sizes = {1000, 125, 8};
        for (int i = 0; i < sizes.length; i++) {
            List<Integer> l = new ArrayList<>();
            for (int j = 0; j < sizes[i]; j++) l.add(i);
            ex.put("e" + i, l);
        }
        Map<Integer, Integer> counts = new HashMap<>();
        int draws = 0;
        Random rnd = new Random(2024);
        for (int trial = 0; trial < 400; trial++) {  // 5 draws each: no exchange runs out
            for (int x : StackExchangeSource.sampleByTemperature(ex, 5, 3.0, rnd)) {
                counts.merge(x, 1, Integer::sum);
                draws++;
            }
        }
        double z = 10 + 5 + 2;  // 1000^(1/3), 125^(1/3), 8^(1/3)
        double[] p = {10 / z, 5 / z, 2 / z};
        for (int i = 0; i < 3; i++) {
            double got = counts.getOrDefault(i, 0) / (double) draws, sd = Math.sqrt(p[i] * (1 - p[i]) / draws);
            assertEquals(p[i], got, 5 * sd, "exchange " + i);
        }
        // Exhausted exchanges drop out and the rest are drawn.
        assertEquals(1133, StackExchangeSource.sampleByTemperature(ex, 5000, 3.0, new Random(1)).size());
    }

    @Test
    void minHashFindsNearDuplicatesAndDecontaminationRemovesTrainCopiesOfEvalPrompts() throws Exception {
        MinHash mh = new MinHash(5, 128, 1);
        String base = "How should I store whole bean coffee to keep it fresh for as long as possible at home in a small kitchen?";
        assertEquals(-1, mh.addAndFind(base, 0.8));
        assertEquals(0, mh.addAndFind(base.replace("small", "tiny").replace("?", "!"), 0.5));
        assertEquals(-1, mh.addAndFind("A completely different text about tamping espresso with fifteen kilograms of force.", 0.5));
        Path eval = dir.resolve("dev.jsonl"), train = dir.resolve("train.jsonl");
        Files.writeString(eval, "{\"prompt\": \"" + base + "\", \"response\": \"Airtight, dark, cool.\"}\n");
        Files.writeString(train, "{\"prompt\": \"" + base.replace("kitchen?", "kitchen area?") + "\", \"response\": \"In a jar.\"}\n"
                + "{\"prompt\": \"What is a ristretto?\", \"response\": \"A short shot.\"}\n");
        Recipe r = Recipe.parse("seed: 1\ndecontaminate: true\nsources:\n"
                + "  - {type: manual, split: dev, path: dev.jsonl}\n  - {type: manual, split: train, path: train.jsonl}\n", "t");
        Curator.Result res = new Curator(r, dir, m -> { }).run();
        assertEquals(1, res.splits().get("train").size());
        assertEquals("What is a ristretto?", res.splits().get("train").get(0).turns().get(0).text());
        assertEquals("contaminates-eval", res.rejected().get(0).rule());
    }

    @Test
    void badRecipesAndInputsNameTheFileAndPlace() throws Exception {
        DataFormatException e = assertThrows(DataFormatException.class,
                () -> Recipe.parse("seed: 1\nsources:\n  - {type: reddit, split: train, path: x}\n", "r.yaml"));
        assertTrue(e.getMessage().contains("r.yaml: sources[0]: type must be one of"), e.getMessage());
        e = assertThrows(DataFormatException.class, () -> Recipe.parse("seed: 1\nsauces: []\n", "r.yaml"));
        assertTrue(e.getMessage().contains("r.yaml: top level: unknown key \"sauces\" for a recipe (it takes: "), e.getMessage());
        Path csv = dir.resolve("wh.csv");
        Files.writeString(csv, "title,heading,paragraph\nHow to X,Step.,\"unclosed quote\nHow to Y,Step,text\n");
        Recipe r = Recipe.parse("seed: 1\nsources:\n  - {type: wikihow, split: train, path: wh.csv}\n", "t");
        e = assertThrows(DataFormatException.class, () -> new Curator(r, dir, m -> { }).run());
        assertTrue(e.getMessage().startsWith(csv + ": broken CSV"), e.getMessage());
        Files.writeString(csv, "title,heading,paragraph\nHow to X,Step.,text\nHow to Y,only two\n");
        e = assertThrows(DataFormatException.class, () -> new Curator(r, dir, m -> { }).run());
        assertTrue(e.getMessage().contains("record 2") && e.getMessage().contains("has 2 fields"), e.getMessage());
        Recipe skip = Recipe.parse("seed: 1\non_error: skip\nsources:\n  - {type: wikihow, split: train, path: wh.csv}\n", "t");
        Curator.Result res = new Curator(skip, dir, m -> { }).run();
        assertEquals(1, res.splits().get("train").size());
        assertEquals("malformed-record", res.rejected().get(0).rule());  // skipped, but counted
        // on_error: skip skips a record the CSV grammar cannot parse too (an unclosed quote runs to the
        // end of the file): reading goes on from the next line, so the records after it are kept
        Files.writeString(csv, "title,heading,paragraph\nHow to X,Step.,Boil the water first.\nHow to Z,Step.,\"unclosed quote\n"
                + "How to Y,Step,Sand the board along the grain.\nHow to W,Step,\"Plant bulbs in autumn, pointy end up.\"\n");
        e = assertThrows(DataFormatException.class, () -> new Curator(r, dir, m -> { }).run());
        assertTrue(e.getMessage().startsWith(csv + ": broken CSV record 2 starting on line 3"), e.getMessage());
        res = new Curator(skip, dir, m -> { }).run();
        assertEquals(3, res.splits().get("train").size(), res.rejected().toString());
        assertEquals(1, res.rejected().size());
        String detail = res.rejected().get(0).detail();
        assertTrue(detail.contains("starting on line 3") && detail.contains("from line 4") && !detail.contains("Exception"), detail);
        // invalid UTF-8 names the file and the line, skip or not
        byte[] bad = "title,heading,paragraph\nHow to X,Step.,text\nHow to Y,Step,caf\u00e9\n".getBytes(java.nio.charset.StandardCharsets.UTF_8);
        bad[bad.length - 3] = (byte) 0xff;
        Files.write(csv, bad);
        for (Recipe each : List.of(r, skip)) {
            e = assertThrows(DataFormatException.class, () -> new Curator(each, dir, m -> { }).run());
            assertTrue(e.getMessage().startsWith(csv + ":3: not valid UTF-8 at byte"), e.getMessage());
        }
        Path manual = dir.resolve("m.jsonl");
        Files.writeString(manual, "{\"prompt\": \"a\", \"response\": \"b\"}\n{\"prompt\": \"a\"}\n");
        Recipe rm = Recipe.parse("seed: 1\nsources:\n  - {type: manual, split: train, path: m.jsonl}\n", "t");
        e = assertThrows(DataFormatException.class, () -> new Curator(rm, dir, m -> { }).run());
        assertTrue(e.getMessage().contains("m.jsonl:2: \"response\" must be a non-empty string"), e.getMessage());
        Recipe missing = Recipe.parse("seed: 1\nsources:\n  - {type: stackexchange, split: train, path: nowhere}\n", "t");
        e = assertThrows(DataFormatException.class, () -> new Curator(missing, dir, m -> { }).run());
        assertTrue(e.getMessage().contains("nowhere cannot be listed"), e.getMessage());
    }

    @Test
    void eachSourceTypeTakesOnlyItsOwnKeysAndHoldsThePapersDefaults() {
        // a StackExchange key put on a wikihow block is an error naming the key, the block and its keys
        DataFormatException e = assertThrows(DataFormatException.class, () -> Recipe.parse(
                "seed: 1\nsources:\n  - {type: stackexchange, split: train, path: se}\n  - {type: wikihow, split: train, path: w.csv,"
                        + " min_answer_score: 5}\n", "r.yaml"));
        assertTrue(e.getMessage().startsWith("r.yaml: sources[1]: unknown key \"min_answer_score\" for a wikihow source block (it takes: type,"),
                e.getMessage());
        assertTrue(!e.getMessage().contains("dev.limactl") && !e.getMessage().contains("class "), e.getMessage());
        e = assertThrows(DataFormatException.class, () -> Recipe.parse("seed: 1\nsources:\n  - {split: train, path: x}\n", "r.yaml"));
        assertTrue(e.getMessage().contains("sources[0]: type must be one of [stackexchange, wikihow, writingprompts, super-ni, manual, jsonl]"
                + " (missing)"), e.getMessage());
        e = assertThrows(DataFormatException.class, () -> Recipe.parse(
                "seed: 1\nsources:\n  - {type: stackexchange, split: train, path: se, groups: {stem: 5, maths: 3}}\n", "r.yaml"));
        assertTrue(e.getMessage().contains("sources[0] (stackexchange): groups must be stem and other, got \"maths\""), e.getMessage());
        e = assertThrows(DataFormatException.class, () -> Recipe.parse(
                "seed: 1\nsources:\n  - {type: stackexchange, split: train, path: se, temperature: 0}\n", "r.yaml"));
        assertTrue(e.getMessage().contains("temperature must be > 0"), e.getMessage());
        e = assertThrows(DataFormatException.class, () -> Recipe.parse(
                "seed: 1\nsources:\n  - {type: wikihow, split: train, path: w.csv, count: many}\n", "r.yaml"));
        assertEquals("r.yaml: sources[0].count: expected an integer, got \"many\"", e.getMessage());
        e = assertThrows(DataFormatException.class, () -> Recipe.parse("seed: 1\nsources: abc\n", "r.yaml"));
        assertEquals("r.yaml: sources: expected a list", e.getMessage());
        // the paper's values where a recipe says nothing
        Recipe r = Recipe.parse("seed: 1\nsources:\n  - {type: stackexchange, split: train, path: se}\n"
                + "  - {type: wikihow, split: train, path: w.csv}\n  - {type: writingprompts, split: train, path: wp.csv}\n"
                + "  - {type: super-ni, split: train, path: ni}\n", "r.yaml");
        Recipe.StackExchange se = (Recipe.StackExchange) r.sources().get(0);
        assertEquals(java.util.Map.of("stem", 200, "other", 200), se.groups());
        assertEquals(3.0, se.temperature());
        assertEquals(10, se.minAnswerScore());
        assertEquals(1200, se.minAnswerChars());
        assertEquals(4096, se.maxAnswerChars());
        assertEquals(Recipe.FIRST_PERSON, se.firstPerson());
        assertEquals(200, r.sources().get(1).count());
        assertEquals(150, r.sources().get(2).count());
        assertEquals(50, r.sources().get(3).count());
        assertEquals(List.of("stackexchange", "wikihow", "writingprompts", "super-ni"), r.sources().stream().map(Recipe.Source::type).toList());
    }

    @Test
    void inputsTheFuzzerFoundAreDataErrors(@org.junit.jupiter.api.io.TempDir Path tmp) throws Exception {
        // RecipeAndCsvFuzzTest found these: an empty recipe (a NullPointerException) and a CSV header
        // with an empty column name (commons-csv's IllegalArgumentException)
        DataFormatException nullSource = assertThrows(DataFormatException.class, () -> Recipe.parse("sources:\n  - ", "r.yaml"));
        assertTrue(nullSource.getMessage().startsWith("r.yaml: sources[0] is empty"), nullSource.getMessage());
        for (String empty : new String[] {"", "~", "null", "# only a comment\n"}) {
            DataFormatException e = assertThrows(DataFormatException.class, () -> Recipe.parse(empty, "r.yaml"));
            assertTrue(e.getMessage().startsWith("r.yaml: the recipe is empty"), e.getMessage());
        }
        Path csv = tmp.resolve("w.csv");
        Files.writeString(csv, ",");
        DataFormatException e = assertThrows(DataFormatException.class, () -> WikiHowSource.read(csv, true, r -> { }));
        assertTrue(e.getMessage().startsWith(csv + ": broken CSV header"), e.getMessage());
    }
}
