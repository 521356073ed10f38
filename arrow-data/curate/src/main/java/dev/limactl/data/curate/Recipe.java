package dev.limactl.data.curate;

import com.fasterxml.jackson.annotation.JsonProperty;
import com.fasterxml.jackson.annotation.JsonSubTypes;
import com.fasterxml.jackson.annotation.JsonTypeInfo;
import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.databind.DeserializationFeature;
import com.fasterxml.jackson.databind.JsonMappingException;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.exc.InvalidFormatException;
import com.fasterxml.jackson.databind.exc.InvalidTypeIdException;
import com.fasterxml.jackson.databind.exc.MismatchedInputException;
import com.fasterxml.jackson.databind.exc.UnrecognizedPropertyException;
import com.fasterxml.jackson.dataformat.yaml.YAMLFactory;
import dev.limactl.data.DataFormatException;
import dev.limactl.data.Example;
import java.io.IOException;
import java.io.InputStream;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import java.util.Random;
import java.util.Set;
import java.util.function.Consumer;

/**
 * A curation recipe (YAML): which sources, how many from each, into which split, the seed. Paths
 * are relative to the recipe file. The paper's recipe ships as the preset {@code lima}.
 */
public record Recipe(long seed, @JsonProperty("on_error") String onError, Dedup dedup, boolean decontaminate,
                     List<Source> sources) {

    /** First-person words (LIMA drops answers written in the first person). */
    public static final List<String> FIRST_PERSON = List.of("I", "I'm", "I've", "I'd", "I'll", "my", "me", "mine", "myself");
    /** Phrases referring to other answers or to the site. */
    public static final List<String> REFERENCES = List.of("as mentioned", "as others have", "as stated", "other answers",
            "another answer", "this answer", "the answer above", "the answer below", "above answer", "previous answer",
            "accepted answer", "stack exchange", "stackexchange", "stack overflow", "stackoverflow", "this site", "upvote",
            "downvote", "edit:");

    /**
     * @param threshold estimated Jaccard similarity of word 5-gram sets above which two examples are duplicates
     */
    public record Dedup(boolean enabled, double threshold, int shingle, int permutations) {}

    /**
     * Where a source reads and reports: relative paths resolve against the recipe's directory;
     * rejected candidates, notes and progress go to the curator.
     */
    public record Context(Path base, boolean skipBadRecords, Consumer<Rejection> rejected, Consumer<String> note,
                          Consumer<String> progress) {
        public Path path(String p) {
            Path q = Path.of(p);
            return q.isAbsolute() ? q : base.resolve(q).normalize();
        }
    }

    /**
     * One source block of a recipe, one record per source type (the YAML key {@code type} picks it).
     * A key the type does not take is an error naming it. Each record holds the paper's defaults for
     * the keys left out, and samples its own examples.
     */
    @JsonTypeInfo(use = JsonTypeInfo.Id.NAME, property = "type")
    @JsonSubTypes({@JsonSubTypes.Type(value = StackExchange.class, name = "stackexchange"),
            @JsonSubTypes.Type(value = WikiHow.class, name = "wikihow"),
            @JsonSubTypes.Type(value = WritingPrompts.class, name = "writingprompts"),
            @JsonSubTypes.Type(value = SuperNi.class, name = "super-ni"),
            @JsonSubTypes.Type(value = Manual.class, name = "manual"),
            @JsonSubTypes.Type(value = Jsonl.class, name = "jsonl")})
    public sealed interface Source permits StackExchange, WikiHow, WritingPrompts, SuperNi, Manual, Jsonl {
        /** The split the examples go to: train, dev or test. */
        String split();

        /** The file or folder read, relative to the recipe. */
        String path();

        /** How many examples were asked for (null: all there are, for manual and jsonl). */
        Integer count();

        /** The type name of the YAML. */
        default String type() {
            return typeName(getClass());
        }

        /** This block's examples for its split, drawn with rnd (a stream of its own per block). */
        List<Example> sample(Context ctx, Random rnd);
    }

    /**
     * StackExchange dumps (one folder per exchange with Posts.xml or a .7z): groups (stem/other) each
     * sampled with temperature over exchanges; LIMA: 200 + 200, temperature 3, answers scored >= 10 of
     * 1200-4096 characters, not in the first person, not referring to other answers.
     */
    public record StackExchange(String split, String path, Integer count, Map<String, Integer> groups, Double temperature,
                                @JsonProperty("stem_exchanges") List<String> stemExchanges,
                                @JsonProperty("min_answer_score") Integer minAnswerScore,
                                @JsonProperty("min_answer_chars") Integer minAnswerChars,
                                @JsonProperty("max_answer_chars") Integer maxAnswerChars,
                                @JsonProperty("require_question_title") Boolean requireQuestionTitle,
                                @JsonProperty("max_candidates") Integer maxCandidates,
                                @JsonProperty("first_person") List<String> firstPerson, List<String> references,
                                @JsonProperty("prompt_body_probability") Double promptBodyProbability) implements Source {
        public StackExchange {
            groups = groups != null ? Map.copyOf(groups) : Map.of("stem", 200, "other", 200);
            temperature = temperature != null ? temperature : 3.0;
            stemExchanges = stemExchanges != null ? List.copyOf(stemExchanges) : StemExchanges.PAPER;
            minAnswerScore = minAnswerScore != null ? minAnswerScore : 10;
            minAnswerChars = minAnswerChars != null ? minAnswerChars : 1200;
            maxAnswerChars = maxAnswerChars != null ? maxAnswerChars : 4096;
            requireQuestionTitle = requireQuestionTitle == null || requireQuestionTitle;
            maxCandidates = maxCandidates != null ? maxCandidates : 10_000;
            firstPerson = firstPerson != null ? List.copyOf(firstPerson) : FIRST_PERSON;
            references = references != null ? List.copyOf(references) : REFERENCES;
            promptBodyProbability = promptBodyProbability != null ? promptBodyProbability : 0.5;
        }

        @Override
        public List<Example> sample(Context ctx, Random rnd) {
            return StackExchangeSource.sample(this, ctx, rnd);
        }
    }

    /** wikiHow articles (CSV): a category first, then an article of it; LIMA: 200. */
    public record WikiHow(String split, String path, Integer count) implements Source {
        public WikiHow {
            count = count != null ? count : 200;
        }

        @Override
        public List<Example> sample(Context ctx, Random rnd) {
            return WikiHowSource.sample(this, ctx, rnd);
        }
    }

    /**
     * r/WritingPrompts pairs (CSV), optionally narrowed to the ids of a selection file (the paper's
     * manual selection); LIMA: 150.
     */
    public record WritingPrompts(String split, String path, Integer count, String selection) implements Source {
        public WritingPrompts {
            count = count != null ? count : 150;
        }

        @Override
        public List<Example> sample(Context ctx, Random rnd) {
            return WritingPromptsSource.sample(this, ctx);
        }
    }

    /** Super-Natural Instructions task files: one random instance per task; LIMA: 50 generation tasks. */
    public record SuperNi(String split, String path, Integer count, List<String> categories) implements Source {
        public SuperNi {
            count = count != null ? count : 50;
            categories = categories != null ? List.copyOf(categories) : null;
        }

        @Override
        public List<Example> sample(Context ctx, Random rnd) {
            return SuperNiSource.sample(this, ctx, rnd);
        }
    }

    /** Hand-written examples (a folder of Markdown/YAML files or a JSONL file), all of them. */
    public record Manual(String split, String path, Integer count) implements Source {
        @Override
        public List<Example> sample(Context ctx, Random rnd) {
            return ManualSource.read(ctx.path(path), split);
        }
    }

    /**
     * Examples in any format limactl reads (LIMA jsonl, ShareGPT, chat/OpenAI messages, Alpaca, a JSON array
     * of those, Arrow tables, Hugging Face datasets folders), all of them, moved to this block's split.
     */
    public record Jsonl(String split, String path, Integer count) implements Source {
        @Override
        public List<Example> sample(Context ctx, Random rnd) {
            return dev.limactl.data.ExampleFiles.read(ctx.path(path), split).stream()
                    .map(e -> new Example(e.id(), e.source(), split, e.turns(), e.provenance())).toList();
        }
    }

    static String typeName(Class<?> c) {
        for (JsonSubTypes.Type t : Source.class.getAnnotation(JsonSubTypes.class).value()) {
            if (t.value() == c) return t.name();
        }
        throw new IllegalArgumentException(c.getName());
    }

    static List<String> typeNames() {
        return java.util.Arrays.stream(Source.class.getAnnotation(JsonSubTypes.class).value()).map(JsonSubTypes.Type::name).toList();
    }

    private static final ObjectMapper YAML = new ObjectMapper(new YAMLFactory())
            .enable(DeserializationFeature.FAIL_ON_UNKNOWN_PROPERTIES);
    static final Set<String> SPLITS = Set.of("train", "dev", "test");

    public static Recipe load(Path file) {
        try {
            return parse(dev.limactl.data.Utf8Text.read(file), file.toString());
        } catch (NoSuchFileException e) {
            throw new DataFormatException("recipe " + file + " does not exist");
        } catch (IOException e) {
            throw new DataFormatException("cannot read recipe " + file + ": " + e.getMessage(), e);
        }
    }

    /** Parses recipe YAML; `where` names it in errors. */
    public static Recipe parse(String yaml, String where) {
        try {
            // an empty document (blank, only comments, "~" or "null") reads as no value at all
            com.fasterxml.jackson.databind.JsonNode tree = YAML.readTree(yaml);
            if (tree == null || tree.isMissingNode() || tree.isNull()) throw new DataFormatException(where + ": the recipe is empty");
            return validate(YAML.readValue(yaml, Recipe.class), where);
        } catch (UnrecognizedPropertyException e) {
            String at = location(e.getPath().subList(0, e.getPath().size() - 1));
            String type = Source.class.isAssignableFrom(e.getReferringClass()) ? typeName(e.getReferringClass()) + " source " : "";
            throw new DataFormatException(where + ": " + at + ": unknown key \"" + e.getPropertyName() + "\" for a " + type
                    + (type.isEmpty() ? "recipe" : "block") + " (it takes: " + String.join(", ", knownKeys(e)) + ")", e);
        } catch (InvalidTypeIdException e) {
            throw new DataFormatException(where + ": " + location(e) + ": type must be one of " + typeNames()
                    + (e.getTypeId() == null ? " (missing)" : ", got \"" + e.getTypeId() + "\""), e);
        } catch (MismatchedInputException e) {
            Object got = e instanceof InvalidFormatException f ? f.getValue() : null;
            throw new DataFormatException(where + ": " + location(e) + ": expected " + kind(e.getTargetType())
                    + (got != null ? ", got \"" + got + "\"" : ""), e);
        } catch (JsonMappingException e) {
            throw new DataFormatException(where + ": " + location(e) + ": " + e.getOriginalMessage().replaceAll(" \\(class [^)]*\\)", ""), e);
        } catch (JsonProcessingException e) {
            throw new DataFormatException(where + ": not valid YAML: " + e.getOriginalMessage(), e);
        }
    }

    /** Where in the recipe a mapping error is, e.g. "sources[2].count". */
    private static String location(JsonMappingException e) {
        return location(e.getPath());
    }

    private static String location(List<JsonMappingException.Reference> path) {
        StringBuilder b = new StringBuilder();
        for (JsonMappingException.Reference r : path) {
            if (r.getFieldName() != null) b.append(b.length() > 0 ? "." : "").append(r.getFieldName());
            else b.append('[').append(r.getIndex()).append(']');
        }
        return b.length() == 0 ? "top level" : b.toString();
    }

    /** What a recipe value of this Java type looks like in YAML. */
    private static String kind(Class<?> t) {
        if (t == null) return "another kind of value";
        if (List.class.isAssignableFrom(t)) return "a list";
        if (Map.class.isAssignableFrom(t) || t.isRecord() || t.isInterface()) return "a mapping of keys";
        if (t == Integer.class || t == int.class || t == Long.class || t == long.class) return "an integer";
        if (t == Double.class || t == double.class) return "a number";
        if (t == Boolean.class || t == boolean.class) return "true or false";
        if (t == String.class) return "a string";
        return "another kind of value";
    }

    private static List<String> knownKeys(UnrecognizedPropertyException e) {
        List<String> keys = new java.util.ArrayList<>();
        if (Source.class.isAssignableFrom(e.getReferringClass())) keys.add("type");
        for (Object k : e.getKnownPropertyIds()) keys.add(k.toString());
        return keys;
    }

    /** The text of a shipped recipe preset ("lima", "demo"). */
    public static String preset(String name) {
        try (InputStream in = Recipe.class.getResourceAsStream("recipes/" + name + ".yaml")) {
            if (in == null) throw new DataFormatException("unknown recipe preset \"" + name + "\" (known: lima, demo)");
            return new String(in.readAllBytes(), java.nio.charset.StandardCharsets.UTF_8);
        } catch (IOException e) {
            throw new IllegalStateException(e);
        }
    }

    static Recipe validate(Recipe r, String where) {
        if (r == null) throw new DataFormatException(where + ": the recipe is empty");
        if (r.sources() == null || r.sources().isEmpty()) throw new DataFormatException(where + ": the recipe lists no sources");
        if (r.onError() != null && !Set.of("fail", "skip").contains(r.onError())) {
            throw new DataFormatException(where + ": on_error must be fail or skip, got \"" + r.onError() + "\"");
        }
        for (int i = 0; i < r.sources().size(); i++) {
            Source src = r.sources().get(i);
            if (src == null) throw new DataFormatException(where + ": sources[" + i + "] is empty (expected {type: ..., split: ..., path: ...})");
            String at = where + ": sources[" + i + "] (" + src.type() + ")";
            if (src.split() == null || !SPLITS.contains(src.split())) throw new DataFormatException(at + ": split must be train, dev or test, got " + src.split());
            if (src.path() == null) throw new DataFormatException(at + ": path is required");
            if (src.count() != null && src.count() < 0) throw new DataFormatException(at + ": count must be >= 0, got " + src.count());
            if (src instanceof StackExchange se) {
                for (var g : se.groups().entrySet()) {
                    if (!g.getKey().equals("stem") && !g.getKey().equals("other")) {
                        throw new DataFormatException(at + ": groups must be stem and other, got \"" + g.getKey() + "\"");
                    }
                    if (g.getValue() == null || g.getValue() < 0) throw new DataFormatException(at + ": groups." + g.getKey() + " must be >= 0");
                }
                if (!(se.temperature() > 0)) throw new DataFormatException(at + ": temperature must be > 0, got " + se.temperature());
                if (!(se.promptBodyProbability() >= 0 && se.promptBodyProbability() <= 1)) {
                    throw new DataFormatException(at + ": prompt_body_probability must be in [0, 1], got " + se.promptBodyProbability());
                }
                if (se.minAnswerChars() > se.maxAnswerChars()) {
                    throw new DataFormatException(at + ": min_answer_chars " + se.minAnswerChars() + " exceeds max_answer_chars " + se.maxAnswerChars());
                }
            }
        }
        if (r.dedup() != null && (r.dedup().threshold() <= 0 || r.dedup().threshold() > 1)) {
            throw new DataFormatException(where + ": dedup.threshold must be in (0, 1]");
        }
        return r;
    }
}
