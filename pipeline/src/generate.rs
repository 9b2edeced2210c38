//! Deterministic generator of messy CRM lead files with planted duplicates.
//!
//! [`generate_csv`] writes a lead CSV that looks like what web forms, expo
//! badge scanners and CRM exports hand to leadflow: the same person arrives
//! several times, with a phone number spelt six different ways, an e-mail in
//! another case or with gmail dots moved, the name as "LAST, First" or with a
//! typo, the country as "IN" or "Bharat". Beside it goes `<file>.truth.csv`
//! (`row,person_id`), the answer key: which rows are the same person. Benches
//! and linkage-quality tests score leadflow's masters against it.
//!
//! Everything is a function of the seed:
//! - a person is a function of `(seed, person_id)` only ([`person`]), so a
//!   second file generated with the same seed and `existing_people` > 0 holds
//!   later appearances of the first file's people, and they agree;
//! - which rows are repeats and how each appearance is made messy comes from
//!   one PRNG stream seeded from `(seed, id_offset, existing_people)`.
//!
//! Same options, same bytes. There is no `rand` dependency: splitmix64 is
//! enough for test data and keeps the output stable across crate upgrades.
//!
//! Planted hard cases (pairs of people `2k`, `2k+1`, each kind about 0.4 % of
//! pairs): a family sharing one e-mail and one mobile with different first
//! names; two colleagues behind one office landline (+91 22 … / +44 20 …);
//! namesakes with the same full name and different phone and e-mail. These
//! are *different* person ids in the truth file: a linker that merges them is
//! wrong.
//!
//! Phones are valid per Google's libphonenumber for their country (checked
//! over a million rows). Indian mobiles starting with 91 written without a
//! country code ("9123456789", "91234 56789", about 1 % of phones) are valid
//! too, but the `phonenumber` crate 0.3 takes their leading 91 for the
//! country code: a normaliser has to try the national reading first.
//!
//! The hard profile ([`GenerateOptions::hard`]) makes a file of the kind
//! that defeats key-based dedupe, for comparing linkers: 6 % of pairs of
//! people are each family, colleagues and namesakes (18 % in all, instead of
//! 1.2 %), namesakes live in the same city, a fifth of rows are sparse
//! Sheets rows (name and phone only; the country where a national number
//! needs it), and a tenth of later appearances come with a new mobile
//! number, an e-mail at the new employer when the job changed. Its extra
//! draws come from a stream of their own: the standard file keeps its bytes.
//!
//! About 1 % of rows are invalid on purpose and have no usable contact at all
//! (an e-mail such as `john@` and no phone, a phone such as `12345` and no
//! e-mail, or a name only): a pipeline must reject them. Generated fields
//! never contain line breaks, so a row's number in the truth file is also its
//! line number in the file (header = line 1).

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

/// The header line of a generated file: column names leadflow's mapping
/// recognises.
pub const HEADER: &str =
    "Full Name,Mobile,Email,Company,Job Title,City,Country,Website,Project,Lead Status,Owner,Created At";

/// What to generate.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerateOptions {
    /// Data rows to write (the header not counted).
    pub rows: usize,
    /// Everything is derived from this.
    pub seed: u64,
    /// Share of rows that are another appearance of an earlier person
    /// (default 0.3). With `existing_people` > 0 these rows are appearances
    /// of people of the earlier batch instead, see there.
    pub duplicate_rate: f64,
    /// Project names; each row gets one of them. Empty: the column is empty.
    pub projects: Vec<String>,
    /// New people get ids from here on (so a second file can hold new people).
    /// Raised to `existing_people` if lower, so new ids never collide with the
    /// earlier batch.
    pub id_offset: u64,
    /// If > 0: the `duplicate_rate` share of rows re-uses person ids from
    /// `[0, existing_people)`, made from the same seed, so this batch links to
    /// the masters of a first batch (pass the first batch's
    /// `GenerateSummary::people`; its ids are `0..people` when its `id_offset`
    /// was 0). All other rows are new people, each once. Timestamps then
    /// start 180 days later.
    pub existing_people: u64,
    /// The hard profile (see the module docs): many more planted families,
    /// colleagues and namesakes, sparse rows, changed numbers.
    pub hard: bool,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        Self {
            rows: 1000,
            seed: 42,
            duplicate_rate: 0.3,
            projects: vec![
                "Riverside Towers".to_string(),
                "Lakeside Villas".to_string(),
                "Hillview Academy".to_string(),
            ],
            id_offset: 0,
            existing_people: 0,
            hard: false,
        }
    }
}

/// What [`generate_csv`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenerateSummary {
    /// Data rows written.
    pub rows: usize,
    /// Distinct person ids among them.
    pub people: usize,
    /// The answer key, `<file>.truth.csv`.
    pub truth_path: PathBuf,
}

/// The canonical (clean) form of a person, as the generator knows them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Person {
    pub id: u64,
    pub first_name: String,
    pub last_name: String,
    /// E.164, e.g. `+919820012345`; an office landline for the colleagues case.
    pub phone_e164: String,
    /// Lower-case, as the person would type it on a good day.
    pub email: String,
    pub company: String,
    pub job_title: String,
    pub city: String,
    /// ISO 3166-1 alpha-2 of the phone's country: IN, GB, US or HK.
    pub country: &'static str,
}

/// The truth file written beside `path`: `path` with `.truth.csv` appended.
pub fn truth_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_os_string();
    s.push(".truth.csv");
    PathBuf::from(s)
}

/// Writes a CSV lead file and beside it `<file>.truth.csv` with columns
/// `row,person_id` where `row` is the row number as a person sees it in the
/// file (header = row 1, first data row = 2).
pub fn generate_csv(path: &Path, opts: &GenerateOptions) -> io::Result<GenerateSummary> {
    let tpath = truth_path(path);
    let mut out = BufWriter::with_capacity(1 << 20, File::create(path)?);
    let mut truth = BufWriter::with_capacity(1 << 18, File::create(&tpath)?);
    out.write_all(HEADER.as_bytes())?;
    out.write_all(b"\n")?;
    truth.write_all(b"row,person_id\n")?;

    let seed = opts.seed;
    let dup_rate = opts.duplicate_rate.clamp(0.0, 1.0);
    let existing = opts.existing_people;
    let first_new = opts.id_offset.max(existing);
    let mut next_new = first_new;
    // Which existing people this file used (for the people count).
    let mut existing_seen = std::collections::HashSet::new();

    let mut rng = Rng::new(key(
        key(seed, 0x6C65_6164_666C_6F77),
        key(opts.id_offset, existing),
    ));
    let base_time: i64 = 1_735_689_600 + if existing > 0 { 180 * 86_400 } else { 0 }; // 2025-01-01T00:00:00Z
    let span: i64 = 180 * 86_400;

    // The hard profile's own draws, so that the standard stream stays as it was.
    let mut hard_rng = opts
        .hard
        .then(|| Rng::new(key(key(seed, 0x6861_7264), key(opts.id_offset, existing))));
    let mut s = Scratch::default();
    let mut line: Vec<u8> = Vec::with_capacity(512);
    let mut num = itoa_buf();

    for i in 0..opts.rows {
        // Who is this row?
        let (pid, repeat) = if existing > 0 {
            if rng.chance(dup_rate) {
                (rng.below(existing), true)
            } else {
                next_new += 1;
                (next_new - 1, false)
            }
        } else if next_new > first_new && rng.chance(dup_rate) {
            (first_new + rng.below(next_new - first_new), true)
        } else {
            next_new += 1;
            (next_new - 1, false)
        };
        if pid < existing {
            existing_seen.insert(pid);
        }
        let p = core(seed, pid, opts.hard);
        let t = base_time + (i as i64 * span) / (opts.rows.max(1) as i64) + rng.below(600) as i64;
        render_row(&p, repeat, t, opts, &mut rng, hard_rng.as_mut(), &mut s);

        line.clear();
        for (k, f) in [
            &s.name, &s.phone, &s.email, &s.company, &s.job, &s.city, &s.country, &s.website, &s.project,
            &s.status, &s.owner, &s.created,
        ]
        .into_iter()
        .enumerate()
        {
            if k > 0 {
                line.push(b',');
            }
            push_csv_field(&mut line, f);
        }
        line.push(b'\n');
        out.write_all(&line)?;

        line.clear();
        line.extend_from_slice(fmt_u64(&mut num, i as u64 + 2));
        line.push(b',');
        line.extend_from_slice(fmt_u64(&mut num, pid));
        line.push(b'\n');
        truth.write_all(&line)?;
    }
    out.flush()?;
    truth.flush()?;
    Ok(GenerateSummary {
        rows: opts.rows,
        people: (next_new - first_new) as usize + existing_seen.len(),
        truth_path: tpath,
    })
}

/// The person with a given id, deterministic in (seed, id): used to make
/// later appearances of the same person.
pub fn person(seed: u64, id: u64) -> Person {
    person_in(seed, id, false)
}

/// [`person`] of the standard (`hard: false`) or the hard profile.
pub fn person_in(seed: u64, id: u64, hard: bool) -> Person {
    let p = core(seed, id, hard);
    let mut email = String::new();
    email_local(&mut email, &p);
    email.push('@');
    email.push_str(p.domain());
    let mut phone = String::from("+");
    phone.push_str(p.phone.country.calling_code());
    let mut d = [0u8; 12];
    phone.push_str(std::str::from_utf8(p.phone.digits(&mut d)).unwrap_or_default());
    Person {
        id,
        first_name: p.first.to_string(),
        last_name: p.last.to_string(),
        phone_e164: phone,
        email,
        company: COMPANIES[p.company].0.to_string(),
        job_title: JOBS[p.job].to_string(),
        city: p.country.cities()[p.city].name.to_string(),
        country: p.country.iso(),
    }
}

// ---------------------------------------------------------------------------
// PRNG: splitmix64.

const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A well-mixed key of two numbers.
fn key(a: u64, b: u64) -> u64 {
    mix64(a.wrapping_mul(GOLDEN) ^ mix64(b.wrapping_add(GOLDEN)))
}

#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed)
    }
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(GOLDEN);
        mix64(self.0)
    }
    /// Uniform in `[0, n)` (n > 0).
    fn below(&mut self, n: u64) -> u64 {
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }
    fn index(&mut self, n: usize) -> usize {
        self.below(n as u64) as usize
    }
    fn chance(&mut self, p: f64) -> bool {
        ((self.next_u64() >> 11) as f64) * (1.0 / (1u64 << 53) as f64) < p
    }
    fn pick<T: Copy>(&mut self, s: &[T]) -> T {
        s[self.index(s.len())]
    }
    /// Index into `weights`, chosen in proportion to them.
    fn weighted(&mut self, weights: &[u32]) -> usize {
        let total: u32 = weights.iter().sum();
        let mut r = self.below(total as u64) as u32;
        for (i, w) in weights.iter().enumerate() {
            if r < *w {
                return i;
            }
            r -= w;
        }
        weights.len() - 1
    }
}

// ---------------------------------------------------------------------------
// Reference data.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Culture {
    Indian,
    Chinese,
    British,
    American,
    Arab,
    European,
}

struct NameSet {
    male: &'static [&'static str],
    female: &'static [&'static str],
    last: &'static [&'static str],
}

#[rustfmt::skip]
const INDIAN: NameSet = NameSet {
    male: &[
        "Aarav", "Aditya", "Amit", "Anil", "Arjun", "Deepak", "Harish", "Imran", "Karan", "Manoj",
        "Nikhil", "Pranav", "Rahul", "Rajesh", "Ravi", "Rohan", "Sanjay", "Siddharth", "Suresh",
        "Venkatesh", "Vikram", "Vivek",
    ],
    female: &[
        "Aishwarya", "Ananya", "Anjali", "Ayesha", "Deepa", "Divya", "Gayatri", "Kavita",
        "Lakshmi", "Meera", "Neha", "Nisha", "Pooja", "Preeti", "Priya", "Priyanka", "Radhika",
        "Shreya", "Sneha", "Sunita", "Swati", "Tanvi",
    ],
    last: &[
        "Sharma", "Verma", "Gupta", "Mehta", "Shah", "Patel", "Iyer", "Iyengar", "Nair", "Menon",
        "Pillai", "Reddy", "Rao", "Naidu", "Kulkarni", "Deshpande", "Joshi", "Desai", "Kapoor",
        "Malhotra", "Khanna", "Chopra", "Bansal", "Agarwal", "Banerjee", "Chatterjee", "Mukherjee",
        "Das", "Singh", "Khan", "Sheikh", "Qureshi", "Fernandes", "D'Souza",
    ],
};

#[rustfmt::skip]
const CHINESE: NameSet = NameSet {
    male: &[
        "Ka Ming", "Wai Kit", "Chi Keung", "Wei", "Jun", "Hao", "Kelvin", "Peter", "Raymond",
        "Tony",
    ],
    female: &[
        "Mei Ling", "Siu Fong", "Wing Yan", "Xin", "Ying", "Mandy", "Cherry", "Vivian", "Joyce",
        "Karen",
    ],
    last: &[
        "Chan", "Wong", "Lee", "Cheung", "Lau", "Leung", "Ng", "Ho", "Lam", "Tang", "Chow",
        "Yeung", "Li", "Zhang", "Wang", "Liu", "Chen", "Tsang",
    ],
};

#[rustfmt::skip]
const BRITISH: NameSet = NameSet {
    male: &[
        "James", "Oliver", "Thomas", "William", "Robert", "Christopher", "Daniel", "Matthew",
        "Jon", "Harry", "George", "Samuel", "Stephen", "Alexander",
    ],
    female: &[
        "Emily", "Charlotte", "Sophie", "Katherine", "Elizabeth", "Hannah", "Lucy", "Olivia",
        "Amelia", "Zoë", "Margaret", "Rebecca",
    ],
    last: &[
        "Smith", "Jones", "Taylor", "Brown", "Williams", "Wilson", "Evans", "Thomas", "Roberts",
        "Walker", "Wright", "Robinson", "Thompson", "Hughes", "Edwards", "Clarke", "Bennett",
        "O'Connor", "Hall", "Wood", "Harris", "Fletcher",
    ],
};

#[rustfmt::skip]
const AMERICAN: NameSet = NameSet {
    male: &[
        "Michael", "John", "David", "Steven", "Brian", "Kevin", "Jason", "Ryan", "Tyler",
        "Brandon", "Justin", "Eric",
    ],
    female: &[
        "Jennifer", "Jessica", "Ashley", "Sarah", "Amanda", "Megan", "Lauren", "Rachel", "Nicole",
        "Stephanie", "Brittany", "Catherine",
    ],
    last: &[
        "Johnson", "Miller", "Davis", "Garcia", "Rodriguez", "Martinez", "Anderson", "Jackson",
        "White", "Harris", "Martin", "Moore", "Clark", "Lewis", "Young", "Allen", "King", "Scott",
        "Green", "Baker", "Nguyen", "Kim",
    ],
};

#[rustfmt::skip]
const ARAB: NameSet = NameSet {
    male: &[
        "Mohammed", "Ahmed", "Omar", "Yusuf", "Khalid", "Hassan", "Ali", "Tariq", "Faisal",
        "Ibrahim",
    ],
    female: &[
        "Fatima", "Aisha", "Layla", "Noor", "Mariam", "Huda", "Salma", "Rania",
    ],
    last: &[
        "Al-Farsi", "Al-Mansouri", "Haddad", "Nasser", "Hussain", "Rahman", "Saleh", "Khalil",
        "Hamdan", "Aziz", "Al-Sayed", "Mansour",
    ],
};

#[rustfmt::skip]
const EUROPEAN: NameSet = NameSet {
    male: &[
        "Lukas", "Matteo", "Javier", "José", "François", "Søren", "Jan", "Pieter", "Marco",
        "Nikolai",
    ],
    female: &[
        "Sophie", "Elena", "Chloé", "Anna", "Lucía", "Ingrid", "Giulia", "Marta", "Léa",
        "Katarzyna",
    ],
    last: &[
        "Müller", "Schneider", "Fischer", "Rossi", "Bianchi", "García", "Fernández", "Martín",
        "Dubois", "Lefèvre", "Jansen", "de Vries", "Nielsen", "Kowalski", "Novak", "Andersson",
        "Costa", "Silva",
    ],
};

impl Culture {
    fn names(self) -> &'static NameSet {
        match self {
            Culture::Indian => &INDIAN,
            Culture::Chinese => &CHINESE,
            Culture::British => &BRITISH,
            Culture::American => &AMERICAN,
            Culture::Arab => &ARAB,
            Culture::European => &EUROPEAN,
        }
    }
}

/// Other spellings and nicknames of a first name, as people type them.
const FIRST_VARIANTS: &[(&str, &[&str])] = &[
    ("Preeti", &["Priti", "Preethi"]),
    ("Mohammed", &["Mohammad", "Muhammad", "Mohamed"]),
    ("Jon", &["John"]),
    ("John", &["Jon", "Johnny"]),
    ("Katherine", &["Catherine", "Kate", "Kathy"]),
    ("Catherine", &["Katherine", "Cathy"]),
    ("Steven", &["Stephen", "Steve"]),
    ("Stephen", &["Steven", "Steve"]),
    ("Robert", &["Bob", "Rob", "Bobby"]),
    ("William", &["Bill", "Will"]),
    ("Elizabeth", &["Liz", "Beth", "Elisabeth"]),
    ("Rajesh", &["Raj"]),
    ("Venkatesh", &["Venky"]),
    ("Siddharth", &["Sid", "Siddarth"]),
    ("Michael", &["Mike"]),
    ("Christopher", &["Chris"]),
    ("Alexander", &["Alex"]),
    ("Daniel", &["Dan", "Danny"]),
    ("Thomas", &["Tom"]),
    ("James", &["Jim", "Jamie"]),
    ("Matthew", &["Matt"]),
    ("Samuel", &["Sam"]),
    ("Margaret", &["Maggie"]),
    ("Jennifer", &["Jen", "Jenny"]),
    ("Rebecca", &["Becky"]),
    ("Ahmed", &["Ahmad"]),
    ("Yusuf", &["Yousef", "Youssef"]),
    ("Aisha", &["Ayesha"]),
    ("Ayesha", &["Aisha"]),
    ("Lakshmi", &["Laxmi"]),
    ("Kavita", &["Kavitha"]),
    ("Pooja", &["Puja"]),
    ("Aishwarya", &["Aishu"]),
    ("Zoë", &["Zoe"]),
    ("José", &["Jose"]),
    ("Chloé", &["Chloe"]),
    ("Lucía", &["Lucia"]),
    ("Ka Ming", &["Kaming", "Ka-Ming"]),
    ("Mei Ling", &["Meiling", "Mei-Ling"]),
];

fn first_variants(name: &str) -> Option<&'static [&'static str]> {
    FIRST_VARIANTS.iter().find(|(n, _)| *n == name).map(|(_, v)| *v)
}

/// (name, web domain). A few hold a comma or quotes: the CSV must quote them.
const COMPANIES: &[(&str, &str)] = &[
    ("Acme Analytics", "acme.io"),
    ("Bluewave Logistics Pvt Ltd", "bluewave.co.in"),
    ("Mehta Textiles", "mehtatextiles.in"),
    ("Harbourview Capital", "harbourview.hk"),
    ("Foo Consulting", "foo.co.uk"),
    ("Northwind Traders", "northwind-traders.com"),
    ("Sterling & Co., LLP", "sterlingco.co.uk"),
    ("Pinnacle Realty, Inc.", "pinnaclerealty.com"),
    ("Greenleaf Foods", "greenleaf.in"),
    ("Orbit Software Solutions", "orbitsoft.io"),
    ("Skyline Infra Projects", "skylineinfra.in"),
    ("Lotus Pharma", "lotuspharma.co.in"),
    ("Redwood Ventures", "redwood.vc"),
    ("Kowloon Trading Co.", "kowloontrading.hk"),
    ("Silverline Fintech", "silverline.finance"),
    ("Brightpath Education", "brightpath.edu.in"),
    ("Cedar & Pine Architects", "cedarpine.co.uk"),
    ("Helix Biotech", "helixbio.com"),
    ("Summit Realty Group", "summitrealty.com"),
    ("Quantum Retail", "quantumretail.in"),
    ("Atlas Freight", "atlasfreight.com"),
    ("Nimbus Cloud Labs", "nimbuslabs.io"),
    ("Saffron Hospitality", "saffronhotels.in"),
    ("Everest Engineering Works", "everest-eng.in"),
    ("The \"Daily Grind\" Cafe", "dailygrind.cafe"),
    ("Meridian Health", "meridianhealth.org"),
    ("Jade Dragon Imports", "jadedragon.com.hk"),
    ("Al Noor Trading LLC", "alnoortrading.ae"),
    ("Vertex Motors", "vertexmotors.co.uk"),
    ("Crescent Bay Properties", "crescentbay.com"),
];

#[rustfmt::skip]
const JOBS: &[&str] = &[
    "Director", "Managing Director", "CEO", "CTO", "Founder", "Co-founder", "Head of Data",
    "Data Engineer", "Software Engineer", "Operations Manager", "Sales Manager", "Director, Sales",
    "VP, Engineering", "Marketing Lead", "Product Manager", "Consultant", "Analyst", "Accountant",
    "HR Manager", "Teacher", "Student", "Doctor", "Architect", "Business Owner",
];

#[rustfmt::skip]
const STATUSES: &[&str] = &[
    "Hot Lead", "hot", "HOT", "Warm", "warm", "Warm Lead", "Cold", "cold lead", "New", "new",
    "Contacted", "Follow-up",
];

#[rustfmt::skip]
const OWNERS: &[&str] = &[
    "Anita Desai", "Rohit Verma", "Sneha Kulkarni", "Imran Shaikh", "Priya Nair", "Tom Baker",
    "Grace Liu", "",
];

/// Phones that no country accepts: too short (an Indian mobile has 10 digits).
const INVALID_PHONES: &[&str] = &["12345", "00000", "+91 12345", "98765 4321", "555-1234"];

const PLUS_TAGS: &[&str] = &["expo", "leads", "property", "promo", "news"];

struct City {
    name: &'static str,
    alt: &'static [&'static str],
    /// US area codes of the city; empty elsewhere.
    area: &'static [u16],
}

const fn city(name: &'static str, alt: &'static [&'static str]) -> City {
    City { name, alt, area: &[] }
}

const IN_CITIES: &[City] = &[
    city("Mumbai", &["Bombay", "mumbai", "Navi Mumbai"]),
    city("Pune", &["pune", "Poona"]),
    city("Bengaluru", &["Bangalore", "bangalore"]),
    city("New Delhi", &["Delhi", "delhi"]),
    city("Hyderabad", &["hyderabad", "Secunderabad"]),
    city("Chennai", &["Madras"]),
    city("Kolkata", &["Calcutta"]),
    city("Ahmedabad", &["Amdavad"]),
    city("Gurugram", &["Gurgaon"]),
    city("Noida", &["NOIDA"]),
    city("Thane", &["thane"]),
    city("Kochi", &["Cochin"]),
];

const GB_CITIES: &[City] = &[
    city("London", &["london", "Greater London"]),
    city("Manchester", &["manchester"]),
    city("Birmingham", &["B'ham"]),
    city("Leeds", &["leeds"]),
    city("Edinburgh", &["Edinburgh, Scotland"]),
    city("Bristol", &["bristol"]),
    city("Cambridge", &["Cambridge, UK"]),
];

const US_CITIES: &[City] = &[
    City {
        name: "New York",
        alt: &["NYC", "New York City"],
        area: &[212, 646, 917, 718],
    },
    City {
        name: "San Francisco",
        alt: &["SF", "San Francisco, CA"],
        area: &[415],
    },
    City {
        name: "Boston",
        alt: &["Boston, MA"],
        area: &[617],
    },
    City {
        name: "Chicago",
        alt: &["chicago"],
        area: &[312],
    },
    City {
        name: "Los Angeles",
        alt: &["LA"],
        area: &[310, 213],
    },
    City {
        name: "Seattle",
        alt: &["seattle"],
        area: &[206],
    },
    City {
        name: "Austin",
        alt: &["Austin, TX"],
        area: &[512],
    },
    City {
        name: "Washington",
        alt: &["Washington, D.C."],
        area: &[202],
    },
    City {
        name: "Miami",
        alt: &["miami"],
        area: &[305],
    },
    City {
        name: "Atlanta",
        alt: &["ATL"],
        area: &[404],
    },
    City {
        name: "Houston",
        alt: &["houston"],
        area: &[713],
    },
];

const HK_CITIES: &[City] = &[
    city("Hong Kong", &["HK", "hong kong"]),
    city("Kowloon", &["kowloon"]),
    city("Central", &["Central, HK"]),
    city("Wan Chai", &["Wanchai"]),
    city("Sha Tin", &["Shatin"]),
    city("Tsim Sha Tsui", &["TST"]),
    city("Causeway Bay", &["causeway bay"]),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Country {
    In,
    Gb,
    Us,
    Hk,
}

impl Country {
    fn iso(self) -> &'static str {
        match self {
            Country::In => "IN",
            Country::Gb => "GB",
            Country::Us => "US",
            Country::Hk => "HK",
        }
    }
    fn calling_code(self) -> &'static str {
        match self {
            Country::In => "91",
            Country::Gb => "44",
            Country::Us => "1",
            Country::Hk => "852",
        }
    }
    fn cities(self) -> &'static [City] {
        match self {
            Country::In => IN_CITIES,
            Country::Gb => GB_CITIES,
            Country::Us => US_CITIES,
            Country::Hk => HK_CITIES,
        }
    }
    /// How people write the country, with weights.
    fn spellings(self) -> (&'static [&'static str], &'static [u32]) {
        match self {
            Country::In => (
                &["India", "IN", "IND", "india", "Bharat", "INDIA"],
                &[50, 14, 6, 14, 4, 6],
            ),
            Country::Gb => (
                &[
                    "United Kingdom",
                    "UK",
                    "GB",
                    "united kingdom",
                    "U.K.",
                    "Great Britain",
                ],
                &[35, 35, 8, 8, 8, 6],
            ),
            Country::Us => (
                &[
                    "United States",
                    "U.S.A.",
                    "USA",
                    "US",
                    "united states",
                    "United States of America",
                ],
                &[30, 12, 25, 15, 8, 10],
            ),
            Country::Hk => (
                &[
                    "Hong Kong",
                    "Hong Kong SAR",
                    "hong kong",
                    "HK",
                    "Hong Kong S.A.R.",
                ],
                &[35, 25, 15, 20, 5],
            ),
        }
    }
}

/// A phone number: national significant number of `len` digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Phone {
    country: Country,
    national: u64,
    len: u8,
    landline: bool,
}

impl Phone {
    fn digits<'a>(&self, buf: &'a mut [u8; 12]) -> &'a [u8] {
        let len = self.len as usize;
        let mut n = self.national;
        for i in (0..len).rev() {
            buf[i] = b'0' + (n % 10) as u8;
            n /= 10;
        }
        &buf[..len]
    }

    /// Writing styles: (template, weight, carries the country code).
    /// `#` takes the next digit of the national number.
    fn templates(&self) -> &'static [(&'static str, u32, bool)] {
        match (self.country, self.landline) {
            (Country::In, false) => &[
                ("+91 ##### #####", 24, true),
                ("0#####-#####", 8, false),
                ("##########", 24, false),
                ("0091 ##########", 5, true),
                ("91-##########", 6, false),
                ("(+91) ##### #####", 5, true),
                ("+91##########", 14, true),
                ("+91-#####-#####", 4, true),
                ("##### #####", 10, false),
            ],
            (Country::In, true) => &[
                ("+91 ## #### ####", 30, true),
                ("0## #### ####", 25, false),
                ("0##-########", 15, false),
                ("+91##########", 10, true),
                ("(0##) #### ####", 10, false),
                ("+91-##-########", 10, true),
            ],
            (Country::Gb, false) => &[
                ("+44 #### ######", 30, true),
                ("0#### ######", 25, false),
                ("0##########", 15, false),
                ("0044 #### ######", 5, true),
                ("+44##########", 10, true),
                ("+44 (0)#### ######", 10, true),
                ("(+44) ####-######", 5, true),
            ],
            (Country::Gb, true) => &[
                ("+44 ## #### ####", 35, true),
                ("0## #### ####", 35, false),
                ("0##########", 10, false),
                ("+44 (0)## #### ####", 10, true),
                ("+44##########", 10, true),
            ],
            (Country::Us, _) => &[
                ("+1 ###-###-####", 30, true),
                ("(###) ###-####", 25, false),
                ("###.###.####", 8, false),
                ("+1##########", 12, true),
                ("1-###-###-####", 8, false),
                ("+1 (###) ###-####", 7, true),
                ("###-###-####", 10, false),
            ],
            (Country::Hk, _) => &[
                ("+852 #### ####", 40, true),
                ("#### ####", 20, false),
                ("+852########", 15, true),
                ("(852) ########", 10, false),
                ("+852-####-####", 10, true),
                ("852-####-####", 5, false),
            ],
        }
    }
}

const IN_MOBILE_FIRST: &[u32] = &[10, 20, 20, 50]; // 6, 7, 8, 9
const GB_MOBILE_PREFIX: &[u64] = &[71, 72, 73, 74, 75, 78];
/// HK mobile prefixes whose whole block libphonenumber accepts.
const HK_MOBILE_PREFIX2: &[u64] = &[61, 63, 64, 65, 69, 94, 96, 97];

fn mobile(country: Country, city: &City, r: &mut Rng) -> Phone {
    let (national, len) = match country {
        Country::In => {
            let first = 6 + r.weighted(IN_MOBILE_FIRST) as u64;
            (first * 1_000_000_000 + r.below(1_000_000_000), 10)
        }
        Country::Gb => (r.pick(GB_MOBILE_PREFIX) * 100_000_000 + r.below(100_000_000), 10),
        Country::Us => (us_number(city, r), 10),
        Country::Hk => {
            if r.chance(0.25) {
                // 5[1-4]x, x != 5
                let second = 1 + r.below(4);
                let mut third = r.below(9);
                if third >= 5 {
                    third += 1;
                }
                ((500 + second * 10 + third) * 100_000 + r.below(100_000), 8)
            } else {
                (r.pick(HK_MOBILE_PREFIX2) * 1_000_000 + r.below(1_000_000), 8)
            }
        }
    };
    Phone {
        country,
        national,
        len,
        landline: false,
    }
}

fn us_number(city: &City, r: &mut Rng) -> u64 {
    let area = r.pick(city.area) as u64;
    let exchange = loop {
        let e = 200 + r.below(800);
        if e % 100 != 11 && e != 555 {
            break e;
        }
    };
    (area * 1000 + exchange) * 10_000 + r.below(10_000)
}

/// An office switchboard: Mumbai (+91 22 …) or London (+44 20 …).
fn landline(country: Country, r: &mut Rng) -> Phone {
    match country {
        Country::Gb => {
            let d = r.pick(&[3u64, 7, 8]);
            Phone {
                country,
                national: 2_000_000_000 + d * 10_000_000 + r.below(10_000_000),
                len: 10,
                landline: true,
            }
        }
        _ => {
            let d = 2 + r.below(6); // 2..=7
            Phone {
                country: Country::In,
                national: 2_200_000_000 + d * 10_000_000 + r.below(10_000_000),
                len: 10,
                landline: true,
            }
        }
    }
}

// ---------------------------------------------------------------------------
// People.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Domain {
    Free(&'static str),
    Company,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EmailStyle {
    FirstDotLast,
    FirstLast,
    InitialDotLast,
    FirstUnderLast,
    FirstDotLastNum,
    FirstNum,
    LastDotFirst,
    FirstInitial,
    /// `<last>.family`: a household's shared address.
    Family,
}

/// A person in compact form: all `&'static str` and indices, no allocation.
#[derive(Debug, Clone, Copy)]
struct Core {
    culture: Culture,
    female: bool,
    first: &'static str,
    last: &'static str,
    em_first: &'static str,
    em_last: &'static str,
    em_style: EmailStyle,
    em_num: u16,
    em_domain: Domain,
    company: usize,
    job: usize,
    country: Country,
    city: usize,
    phone: Phone,
}

impl Core {
    fn domain(&self) -> &'static str {
        match self.em_domain {
            Domain::Free(d) => d,
            Domain::Company => COMPANIES[self.company].1,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PairKind {
    Plain,
    /// Spouses/siblings: same e-mail and mobile, different first names.
    Family,
    /// Colleagues: same office landline and company, different names.
    Office,
    /// Same full name, different phone and e-mail.
    Namesake,
}

fn pair_kind(seed: u64, pair: u64, hard: bool) -> PairKind {
    let mut r = Rng::new(key(key(seed, 0x7061_6972), pair));
    let per_kind = if hard { 60 } else { 4 };
    match r.below(1000) / per_kind {
        0 => PairKind::Family,
        1 => PairKind::Office,
        2 => PairKind::Namesake,
        _ => PairKind::Plain,
    }
}

fn pick_culture(r: &mut Rng) -> Culture {
    const C: [Culture; 6] = [
        Culture::Indian,
        Culture::Chinese,
        Culture::British,
        Culture::American,
        Culture::Arab,
        Culture::European,
    ];
    C[r.weighted(&[58, 10, 10, 9, 6, 7])]
}

fn pick_country(c: Culture, r: &mut Rng) -> Country {
    use Country::*;
    let (cs, w): (&[Country], &[u32]) = match c {
        Culture::Indian => (&[In, Gb, Us], &[92, 4, 4]),
        Culture::Chinese => (&[Hk, Gb, Us], &[80, 10, 10]),
        Culture::British => (&[Gb, Hk, In], &[90, 5, 5]),
        Culture::American => (&[Us, Gb], &[95, 5]),
        Culture::Arab => (&[In, Gb, Us], &[40, 40, 20]),
        Culture::European => (&[Gb, Us, Hk], &[50, 30, 20]),
    };
    cs[r.weighted(w)]
}

fn pick_free_domain(country: Country, r: &mut Rng) -> Option<&'static str> {
    let (ds, w): (&[&str], &[u32]) = match country {
        Country::In => (
            &[
                "gmail.com",
                "yahoo.co.in",
                "yahoo.com",
                "outlook.com",
                "hotmail.com",
                "rediffmail.com",
                "",
            ],
            &[50, 8, 8, 8, 6, 5, 15],
        ),
        _ => (
            &[
                "gmail.com",
                "yahoo.com",
                "outlook.com",
                "hotmail.com",
                "icloud.com",
                "",
            ],
            &[40, 10, 12, 8, 8, 22],
        ),
    };
    let d = ds[r.weighted(w)];
    if d.is_empty() { None } else { Some(d) }
}

fn first_name(c: Culture, female: bool, r: &mut Rng) -> &'static str {
    let n = c.names();
    r.pick(if female { n.female } else { n.male })
}

/// A person as if nobody else existed: a function of (seed, id).
fn base_person(seed: u64, id: u64) -> Core {
    let mut r = Rng::new(key(key(seed, 0x7065_7273_6f6e), id));
    let culture = pick_culture(&mut r);
    let female = r.chance(0.45);
    let first = first_name(culture, female, &mut r);
    let last = r.pick(culture.names().last);
    let country = pick_country(culture, &mut r);
    let city = r.index(country.cities().len());
    let phone = mobile(country, &country.cities()[city], &mut r);
    let company = r.index(COMPANIES.len());
    let job = r.index(JOBS.len());
    let (em_domain, em_style) = match pick_free_domain(country, &mut r) {
        Some(d) => {
            use EmailStyle::*;
            const S: [EmailStyle; 8] = [
                FirstDotLast,
                FirstLast,
                InitialDotLast,
                FirstUnderLast,
                FirstDotLastNum,
                FirstNum,
                LastDotFirst,
                FirstInitial,
            ];
            (Domain::Free(d), S[r.weighted(&[30, 15, 8, 6, 14, 12, 7, 8])])
        }
        None => {
            use EmailStyle::*;
            const S: [EmailStyle; 3] = [FirstDotLast, InitialDotLast, FirstLast];
            (Domain::Company, S[r.weighted(&[60, 25, 15])])
        }
    };
    // Mailboxes are unique per person: a number keeps 700k people on 150 x 150
    // names from sharing addresses by accident (only planted pairs share one).
    let em_num = 1 + r.below(60_000) as u16;
    Core {
        culture,
        female,
        first,
        last,
        em_first: first,
        em_last: last,
        em_style,
        em_num,
        em_domain,
        company,
        job,
        country,
        city,
        phone,
    }
}

/// The person with this id, including the planted pair relations.
fn core(seed: u64, id: u64, hard: bool) -> Core {
    let pair = id / 2;
    let second = id % 2 == 1;
    let kind = pair_kind(seed, pair, hard);
    if kind == PairKind::Plain {
        return base_person(seed, id);
    }
    let b = base_person(seed, pair * 2);
    let mut p = if second { base_person(seed, id) } else { b };
    let mut r = Rng::new(key(key(seed, 0x6b696e64), pair));
    match kind {
        PairKind::Plain => {}
        PairKind::Family => {
            let share_base_email = r.chance(0.5);
            if second {
                p.culture = b.culture;
                p.female = !b.female;
                p.last = b.last;
                p.first = loop {
                    let f = first_name(b.culture, p.female, &mut r);
                    if f != b.first {
                        break f;
                    }
                };
                p.country = b.country;
                p.city = b.city;
                p.phone = b.phone;
                p.company = r.index(COMPANIES.len());
            }
            p.em_first = b.first;
            p.em_last = b.last;
            p.em_num = b.em_num;
            if share_base_email && matches!(b.em_domain, Domain::Free(_)) {
                p.em_style = b.em_style;
                p.em_domain = b.em_domain;
            } else {
                p.em_style = EmailStyle::Family;
                p.em_domain = Domain::Free("gmail.com");
            }
        }
        PairKind::Office => {
            let country = if b.country == Country::Gb {
                Country::Gb
            } else {
                Country::In
            };
            let phone = landline(country, &mut r);
            p.country = country;
            p.city = 0; // Mumbai / London
            p.phone = phone;
            p.company = b.company;
            p.em_domain = Domain::Company;
            if matches!(
                p.em_style,
                EmailStyle::FirstDotLastNum | EmailStyle::FirstNum | EmailStyle::Family
            ) {
                p.em_style = EmailStyle::FirstDotLast;
            }
            if second && p.first == b.first && p.last == b.last {
                // Colleagues, not namesakes: keep the two cases apart.
                p.last = r.pick(p.culture.names().last);
                if p.last == b.last {
                    p.last = "Fletcher";
                }
                p.em_last = p.last;
            }
        }
        PairKind::Namesake => {
            if second {
                p.culture = b.culture;
                p.female = b.female;
                p.first = b.first;
                p.last = b.last;
                p.em_first = b.first;
                p.em_last = b.last;
                // A different address for sure: a number the other does not have.
                p.em_style = EmailStyle::FirstDotLastNum;
                p.em_num = (b.em_num % 98) + 1;
                if b.em_style == EmailStyle::FirstDotLastNum && p.em_num == b.em_num {
                    p.em_num = b.em_num % 98 + 1;
                }
                if p.em_domain == Domain::Company && p.company == b.company {
                    p.em_domain = Domain::Free("outlook.com");
                }
                if hard {
                    // Namesakes in one city.
                    p.country = b.country;
                    p.city = b.city;
                    p.phone = mobile(b.country, &b.country.cities()[b.city], &mut r);
                }
                if p.phone == b.phone {
                    p.phone.national ^= 1;
                }
            }
        }
    }
    p
}

// ---------------------------------------------------------------------------
// Rendering one appearance.

#[derive(Default)]
struct Scratch {
    name: String,
    phone: String,
    email: String,
    company: String,
    job: String,
    city: String,
    country: String,
    website: String,
    project: String,
    status: String,
    owner: String,
    created: String,
    first: String,
    last: String,
}

fn render_row(
    p: &Core,
    repeat: bool,
    t: i64,
    opts: &GenerateOptions,
    r: &mut Rng,
    mut hard: Option<&mut Rng>,
    s: &mut Scratch,
) {
    for f in [
        &mut s.name,
        &mut s.phone,
        &mut s.email,
        &mut s.company,
        &mut s.job,
        &mut s.city,
        &mut s.country,
        &mut s.website,
        &mut s.project,
        &mut s.status,
        &mut s.owner,
        &mut s.created,
    ] {
        f.clear();
    }
    write_name(p, r, s);

    // Hard profile: a sparse Sheets row, or a later appearance with a new number.
    let (sparse, new_phone) = match hard.as_deref_mut() {
        Some(h) => {
            let sparse = h.chance(0.2);
            let new = (repeat && h.chance(0.1)).then(|| mobile(p.country, &p.country.cities()[p.city], h));
            (sparse, new)
        }
        None => (false, None),
    };
    let phone = new_phone.unwrap_or(p.phone);

    // Contact fields: normally at most one of phone / e-mail is missing; about
    // 1 % of rows have no usable contact at all, on purpose.
    let mut international = false;
    let unusable = r.chance(0.01);
    if unusable {
        match r.below(10) {
            0..=3 => bad_email(p, r, &mut s.email),
            4..=6 => s.phone.push_str(r.pick(INVALID_PHONES)),
            _ => {} // name only
        }
    } else {
        let roll = r.below(100);
        if roll >= 8 {
            international = write_phone(&phone, r, &mut s.phone);
        }
        // roll < 8: phone missing, e-mail kept; roll >= 92: e-mail missing.
        if roll < 92 {
            write_email(p, r, &mut s.email, &mut s.first);
        }
    }

    // A later appearance may come with a new job, company or city.
    let mut company = p.company;
    let mut job = p.job;
    let mut city = p.city;
    if repeat {
        if r.chance(0.15) {
            company = r.index(COMPANIES.len());
            job = r.index(JOBS.len());
        } else if r.chance(0.1) {
            job = r.index(JOBS.len());
        }
        if r.chance(0.08) {
            city = r.index(p.country.cities().len());
        }
    }
    if let Some(h) = hard.as_deref_mut()
        && company != p.company
        && p.em_domain == Domain::Company
        && !unusable
        && !s.email.is_empty()
    {
        // A new employer, a new work address.
        s.email.clear();
        let moved = Core { company, ..*p };
        write_email(&moved, h, &mut s.email, &mut s.first);
    }
    if r.chance(0.9) {
        let (name, _) = COMPANIES[company];
        if r.chance(0.06) {
            push_upper(&mut s.company, name);
        } else {
            s.company.push_str(name);
        }
        if r.chance(0.55) {
            write_website(COMPANIES[company].1, r, &mut s.website);
        }
    }
    if r.chance(0.85) {
        s.job.push_str(JOBS[job]);
    }
    if r.chance(0.95) {
        let c = &p.country.cities()[city];
        if r.chance(0.12) {
            s.city.push_str(r.pick(c.alt));
        } else {
            s.city.push_str(c.name);
        }
    }
    // Country: left out now and then, but only where the phone says it.
    let may_omit = international || s.phone.is_empty();
    if !(may_omit && r.chance(0.04)) {
        let (names, w) = p.country.spellings();
        s.country.push_str(names[r.weighted(w)]);
    }
    if !opts.projects.is_empty() {
        s.project.push_str(&opts.projects[r.index(opts.projects.len())]);
    }
    s.status.push_str(r.pick(STATUSES));
    s.owner.push_str(r.pick(OWNERS));
    write_time(t, r, &mut s.created);
    if let Some(h) = hard
        && sparse
        && !unusable
    {
        // A Sheets row: name and phone, the country only where the number needs it.
        for f in [
            &mut s.email,
            &mut s.company,
            &mut s.job,
            &mut s.city,
            &mut s.website,
        ] {
            f.clear();
        }
        if s.phone.is_empty() {
            international = write_phone(&phone, h, &mut s.phone);
        }
        s.country.clear();
        if !international {
            let (names, w) = p.country.spellings();
            s.country.push_str(names[h.weighted(w)]);
        }
    }
}

fn write_name(p: &Core, r: &mut Rng, s: &mut Scratch) {
    s.first.clear();
    s.last.clear();
    let variants = first_variants(p.first);
    match variants {
        Some(v) if r.chance(0.12) => s.first.push_str(r.pick(v)),
        _ => s.first.push_str(p.first),
    }
    s.last.push_str(p.last);
    if r.chance(0.03) {
        let target = if r.chance(0.5) { &mut s.first } else { &mut s.last };
        typo(target, r);
    }
    let (first, last) = (s.first.as_str(), s.last.as_str());
    let out = &mut s.name;
    let style = r.below(100);
    match style {
        0..=49 => {
            if p.culture == Culture::Chinese && r.chance(0.35) {
                // Surname first, as written in Hong Kong: "Chan Ka Ming".
                out.push_str(last);
                out.push(' ');
                out.push_str(first);
            } else {
                out.push_str(first);
                out.push(' ');
                out.push_str(last);
            }
        }
        50..=57 => {
            push_upper(out, last);
            out.push_str(", ");
            out.push_str(first);
        }
        58..=63 => {
            out.push_str(last);
            out.push_str(", ");
            out.push_str(first);
        }
        64..=71 => {
            push_lower(out, first);
            out.push(' ');
            push_lower(out, last);
        }
        72..=76 => {
            push_upper(out, first);
            out.push(' ');
            push_upper(out, last);
        }
        77..=86 => {
            let h = if p.female {
                r.pick(&["Ms. ", "Mrs. ", "Dr. ", "Ms "])
            } else {
                r.pick(&["Mr. ", "Dr. ", "Mr "])
            };
            out.push_str(h);
            out.push_str(first);
            out.push(' ');
            out.push_str(last);
        }
        87..=92 => {
            out.push_str(first);
            out.push_str("  ");
            out.push_str(last);
        }
        93..=96 => {
            out.push(' ');
            out.push_str(first);
            out.push(' ');
            out.push_str(last);
            out.push(' ');
        }
        _ => {
            out.push_str(first);
            if let Some(v) = variants {
                // Robert "Bob" Smith: quotes inside a field.
                out.push_str(" \"");
                out.push_str(v[0]);
                out.push('"');
            }
            out.push(' ');
            out.push_str(last);
        }
    }
}

/// One adjacent pair swapped or one letter dropped, on ASCII names only.
fn typo(s: &mut String, r: &mut Rng) {
    if !s.is_ascii() || s.len() < 4 {
        return;
    }
    let mut b = std::mem::take(s).into_bytes();
    let i = 1 + r.index(b.len() - 2);
    if r.chance(0.5) {
        b.swap(i, i + 1);
    } else {
        b.remove(i);
    }
    *s = String::from_utf8(b).unwrap_or_default();
}

fn push_upper(out: &mut String, s: &str) {
    if s.is_ascii() {
        out.extend(s.bytes().map(|b| b.to_ascii_uppercase() as char));
    } else {
        out.extend(s.chars().flat_map(char::to_uppercase));
    }
}

fn push_lower(out: &mut String, s: &str) {
    if s.is_ascii() {
        out.extend(s.bytes().map(|b| b.to_ascii_lowercase() as char));
    } else {
        out.extend(s.chars().flat_map(char::to_lowercase));
    }
}

/// Lower-case ASCII letters of a name for an e-mail: accents folded, spaces,
/// hyphens and apostrophes dropped ("D'Souza" -> "dsouza", "Søren" -> "soren").
fn push_email_name(out: &mut String, s: &str) {
    for c in s.chars() {
        let c = match c {
            'a'..='z' | '0'..='9' => c,
            'A'..='Z' => c.to_ascii_lowercase(),
            'á' | 'à' | 'â' | 'ä' | 'å' => 'a',
            'é' | 'è' | 'ê' | 'ë' => 'e',
            'í' | 'ì' | 'î' | 'ï' => 'i',
            'ó' | 'ò' | 'ô' | 'ö' | 'ø' => 'o',
            'ú' | 'ù' | 'û' | 'ü' => 'u',
            'ç' => 'c',
            'ñ' => 'n',
            _ => continue,
        };
        out.push(c);
    }
}

fn push_num(out: &mut String, n: u16) {
    let mut b = itoa_buf();
    out.push_str(std::str::from_utf8(fmt_u64(&mut b, n as u64)).unwrap_or_default());
}

/// The canonical local part of a person's e-mail.
fn email_local(out: &mut String, p: &Core) {
    use EmailStyle::*;
    let (f, l) = (p.em_first, p.em_last);
    match p.em_style {
        FirstDotLast => {
            push_email_name(out, f);
            out.push('.');
            push_email_name(out, l);
        }
        FirstLast => {
            push_email_name(out, f);
            push_email_name(out, l);
        }
        InitialDotLast => {
            let start = out.len();
            push_email_name(out, f);
            out.truncate(start + 1.min(out.len() - start));
            out.push('.');
            push_email_name(out, l);
        }
        FirstUnderLast => {
            push_email_name(out, f);
            out.push('_');
            push_email_name(out, l);
        }
        FirstDotLastNum => {
            push_email_name(out, f);
            out.push('.');
            push_email_name(out, l);
            push_num(out, p.em_num);
        }
        FirstNum => {
            push_email_name(out, f);
            push_num(out, p.em_num);
        }
        LastDotFirst => {
            push_email_name(out, l);
            out.push('.');
            push_email_name(out, f);
        }
        FirstInitial => {
            push_email_name(out, f);
            let start = out.len();
            push_email_name(out, l);
            out.truncate(start + 1.min(out.len() - start));
        }
        Family => {
            push_email_name(out, l);
            out.push_str(".family");
        }
    }
    if !matches!(p.em_style, FirstDotLastNum | FirstNum | Family) {
        push_num(out, p.em_num);
    }
}

fn write_email(p: &Core, r: &mut Rng, out: &mut String, tmp: &mut String) {
    tmp.clear();
    email_local(tmp, p);
    let domain = p.domain();
    // gmail ignores dots: people add and drop them.
    if domain == "gmail.com" && r.chance(0.15) {
        if tmp.contains('.') {
            tmp.retain(|c| c != '.');
        } else if tmp.len() > 2 {
            let at = 1 + r.index(tmp.len() - 1);
            tmp.insert(at, '.');
        }
    }
    if (domain == "gmail.com" || domain == "outlook.com" || p.em_domain == Domain::Company) && r.chance(0.04)
    {
        tmp.push('+');
        tmp.push_str(r.pick(PLUS_TAGS));
    }
    if r.chance(0.04) {
        out.push(' ');
    }
    match r.below(100) {
        0..=7 => {
            push_upper(out, tmp);
            out.push('@');
            push_upper(out, domain);
        }
        8..=17 => {
            // Priya.Sharma@Gmail.com
            let mut cap = true;
            for c in tmp.chars() {
                out.push(if cap { c.to_ascii_uppercase() } else { c });
                cap = matches!(c, '.' | '_');
            }
            out.push('@');
            let mut cs = domain.chars();
            if let Some(c) = cs.next() {
                out.push(c.to_ascii_uppercase());
            }
            out.extend(cs);
        }
        _ => {
            out.push_str(tmp);
            out.push('@');
            out.push_str(domain);
        }
    }
    if r.chance(0.04) {
        out.push(' ');
    }
}

fn bad_email(p: &Core, r: &mut Rng, out: &mut String) {
    email_local(out, p);
    match r.below(3) {
        0 => out.push('@'),
        1 => {
            out.push_str("@@");
            out.push_str(p.domain());
        }
        _ => {
            out.push_str("(at)");
            out.push_str(p.domain());
        }
    }
}

/// Returns whether the written form carries the country code.
fn write_phone(phone: &Phone, r: &mut Rng, out: &mut String) -> bool {
    let t = phone.templates();
    let w: [u32; 9] = std::array::from_fn(|i| t.get(i).map_or(0, |x| x.1));
    let (template, _, international) = t[r.weighted(&w[..t.len()])];
    let mut buf = [0u8; 12];
    let digits = phone.digits(&mut buf);
    let mut k = 0;
    for b in template.bytes() {
        if b == b'#' {
            out.push(digits[k] as char);
            k += 1;
        } else {
            out.push(b as char);
        }
    }
    international
}

fn write_website(domain: &str, r: &mut Rng, out: &mut String) {
    let (pre, post) = [
        ("", ""),
        ("www.", ""),
        ("https://", ""),
        ("https://www.", ""),
        ("http://www.", "/"),
        ("https://", "/"),
    ][r.weighted(&[30, 25, 20, 15, 5, 5])];
    out.push_str(pre);
    out.push_str(domain);
    out.push_str(post);
}

/// Unix seconds as "2025-03-14 10:22:05" (mostly), ISO with T and Z, or
/// "14/03/2025 10:22".
fn write_time(t: i64, r: &mut Rng, out: &mut String) {
    let days = t.div_euclid(86_400);
    let secs = t.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    let (hh, mm, ss) = (secs / 3600, secs / 60 % 60, secs % 60);
    let two = |out: &mut String, v: i64| {
        out.push((b'0' + (v / 10) as u8) as char);
        out.push((b'0' + (v % 10) as u8) as char);
    };
    let year = |out: &mut String| {
        two(out, y / 100);
        two(out, y % 100);
    };
    match r.weighted(&[80, 15, 5]) {
        f @ (0 | 1) => {
            year(out);
            out.push('-');
            two(out, m);
            out.push('-');
            two(out, d);
            out.push(if f == 0 { ' ' } else { 'T' });
            two(out, hh);
            out.push(':');
            two(out, mm);
            out.push(':');
            two(out, ss);
            if f == 1 {
                out.push('Z');
            }
        }
        _ => {
            two(out, d);
            out.push('/');
            two(out, m);
            out.push('/');
            year(out);
            out.push(' ');
            two(out, hh);
            out.push(':');
            two(out, mm);
        }
    }
}

/// Howard Hinnant's days-since-epoch to (year, month, day).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// RFC 4180: quote a field holding a comma, quote, CR or LF; double quotes.
fn push_csv_field(line: &mut Vec<u8>, f: &str) {
    if f.bytes().any(|b| matches!(b, b',' | b'"' | b'\n' | b'\r')) {
        line.push(b'"');
        for b in f.bytes() {
            if b == b'"' {
                line.push(b'"');
            }
            line.push(b);
        }
        line.push(b'"');
    } else {
        line.extend_from_slice(f.as_bytes());
    }
}

fn itoa_buf() -> [u8; 20] {
    [0u8; 20]
}

fn fmt_u64(buf: &mut [u8; 20], mut n: u64) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    &buf[i..]
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{HashMap, HashSet};

    /// A file path in a fresh directory, removed when dropped.
    struct TempFile(PathBuf);

    impl std::ops::Deref for TempFile {
        type Target = Path;
        fn deref(&self) -> &Path {
            &self.0
        }
    }

    impl AsRef<Path> for TempFile {
        fn as_ref(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            if let Some(dir) = self.0.parent() {
                let _ = std::fs::remove_dir_all(dir);
            }
        }
    }

    fn scratch(name: &str) -> TempFile {
        let dir = std::env::temp_dir().join(format!("leadflow-generate-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        TempFile(dir.join("leads.csv"))
    }

    fn opts(rows: usize) -> GenerateOptions {
        GenerateOptions {
            rows,
            ..GenerateOptions::default()
        }
    }

    /// A small RFC 4180 reader: (line the record starts on, fields).
    fn parse_csv(text: &str) -> Vec<(usize, Vec<String>)> {
        let mut out = Vec::new();
        let mut fields = Vec::new();
        let mut field = String::new();
        let (mut line, mut start) = (1usize, 1usize);
        let mut quoted = false;
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            if quoted {
                match c {
                    '"' if chars.peek() == Some(&'"') => {
                        chars.next();
                        field.push('"');
                    }
                    '"' => quoted = false,
                    '\n' => {
                        line += 1;
                        field.push(c);
                    }
                    _ => field.push(c),
                }
                continue;
            }
            match c {
                '"' => quoted = true,
                ',' => fields.push(std::mem::take(&mut field)),
                '\r' => {}
                '\n' => {
                    fields.push(std::mem::take(&mut field));
                    out.push((start, std::mem::take(&mut fields)));
                    line += 1;
                    start = line;
                }
                _ => field.push(c),
            }
        }
        assert!(fields.is_empty() && field.is_empty(), "file ends with a newline");
        out
    }

    fn read_truth(path: &Path) -> Vec<(usize, u64)> {
        let text = std::fs::read_to_string(path).unwrap();
        let mut lines = text.lines();
        assert_eq!(lines.next(), Some("row,person_id"));
        lines
            .map(|l| {
                let (r, p) = l.split_once(',').unwrap();
                (r.parse().unwrap(), p.parse().unwrap())
            })
            .collect()
    }

    fn digits(s: &str) -> String {
        s.chars().filter(char::is_ascii_digit).collect()
    }

    /// Repeat share: rows whose person appeared on an earlier row.
    fn repeat_share(truth: &[(usize, u64)]) -> f64 {
        let mut seen = HashSet::new();
        let repeats = truth.iter().filter(|(_, p)| !seen.insert(*p)).count();
        repeats as f64 / truth.len() as f64
    }

    #[test]
    fn generate_same_seed_same_bytes() {
        let (a, b, c) = (scratch("det-a"), scratch("det-b"), scratch("det-c"));
        let o = opts(3000);
        let sa = generate_csv(&a, &o).unwrap();
        let sb = generate_csv(&b, &o).unwrap();
        assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
        assert_eq!(
            std::fs::read(&sa.truth_path).unwrap(),
            std::fs::read(&sb.truth_path).unwrap()
        );
        assert_eq!((sa.rows, sa.people), (sb.rows, sb.people));
        generate_csv(&c, &GenerateOptions { seed: 7, ..o }).unwrap();
        assert_ne!(std::fs::read(&a).unwrap(), std::fs::read(&c).unwrap());
        assert_eq!(person(42, 123), person(42, 123));
        assert_ne!(person(42, 123), person(43, 123));
    }

    #[test]
    fn generate_row_count_header_and_columns() {
        let path = scratch("count");
        let s = generate_csv(&path, &opts(2500)).unwrap();
        assert_eq!(s.rows, 2500);
        assert_eq!(s.truth_path, truth_path(&path));
        assert!(s.truth_path.to_string_lossy().ends_with("leads.csv.truth.csv"));
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with(&format!("{HEADER}\n")));
        let recs = parse_csv(&text);
        assert_eq!(recs.len(), 2501);
        assert!(
            recs.iter().all(|(_, f)| f.len() == 12),
            "every record has 12 fields"
        );
        assert_eq!(read_truth(&s.truth_path).len(), 2500);
        let empty = generate_csv(&scratch("empty"), &opts(0)).unwrap();
        assert_eq!((empty.rows, empty.people), (0, 0));
    }

    #[test]
    fn generate_truth_rows_line_up_with_data_rows() {
        let path = scratch("truth");
        let s = generate_csv(&path, &opts(5000)).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let recs = parse_csv(&text);
        let truth = read_truth(&s.truth_path);
        // Quoted fields with commas and with doubled quotes are there...
        assert!(text.contains("\"Director, Sales\"") || text.contains("\"VP, Engineering\""));
        assert!(
            recs.iter().any(|(_, f)| f[0].contains(", ")),
            "a LAST, First name"
        );
        assert!(text.contains("\"\""), "a doubled quote");
        // ...and still data row i is on line i + 2, and so is truth row i.
        for (i, ((line, fields), (row, pid))) in recs[1..].iter().zip(&truth).enumerate() {
            assert_eq!(*line, i + 2);
            assert_eq!(*row, i + 2);
            // The row is who the truth says: a phone that is this person's
            // ends in their number (the 12345-style invalid ones aside).
            let d = digits(&fields[1]);
            if d.len() >= 8 && !INVALID_PHONES.contains(&fields[1].as_str()) {
                let want = person(42, *pid).phone_e164;
                assert_eq!(
                    &want[want.len() - 7..],
                    &d[d.len() - 7..],
                    "row {row}: {fields:?}"
                );
            }
        }
    }

    #[test]
    fn generate_duplicate_share_roughly_as_asked() {
        for rate in [0.0, 0.3, 0.6] {
            let path = scratch(&format!("dup-{rate}"));
            let s = generate_csv(
                &path,
                &GenerateOptions {
                    rows: 20_000,
                    duplicate_rate: rate,
                    ..opts(0)
                },
            )
            .unwrap();
            let truth = read_truth(&s.truth_path);
            let share = repeat_share(&truth);
            assert!((share - rate).abs() < 0.02, "rate {rate}: share {share}");
            let distinct: HashSet<u64> = truth.iter().map(|(_, p)| *p).collect();
            assert_eq!(s.people, distinct.len());
            assert_eq!(*distinct.iter().min().unwrap(), 0);
            assert_eq!(*distinct.iter().max().unwrap() as usize, distinct.len() - 1);
        }
    }

    #[test]
    fn generate_existing_people_link_to_first_batch() {
        let first = scratch("batch1");
        let s1 = generate_csv(&first, &opts(4000)).unwrap();
        let existing = s1.people as u64;
        let second = scratch("batch2");
        let o2 = GenerateOptions {
            existing_people: existing,
            id_offset: existing,
            ..opts(3000)
        };
        let s2 = generate_csv(&second, &o2).unwrap();
        let t1 = read_truth(&s1.truth_path);
        let t2 = read_truth(&s2.truth_path);
        let old = t2.iter().filter(|(_, p)| *p < existing).count();
        let share = old as f64 / t2.len() as f64;
        assert!(
            (share - 0.3).abs() < 0.03,
            "share of rows of earlier people {share}"
        );
        let new: HashSet<u64> = t2.iter().map(|(_, p)| *p).filter(|p| *p >= existing).collect();
        assert_eq!(
            *new.iter().min().unwrap(),
            existing,
            "new ids start after the old ones"
        );
        assert_eq!(*new.iter().max().unwrap(), existing + new.len() as u64 - 1);
        assert_eq!(
            s2.people,
            t2.iter().map(|(_, p)| *p).collect::<HashSet<_>>().len()
        );

        // The same person id is the same person in both files: same phone.
        let phones = |path: &Path, truth: &[(usize, u64)]| {
            let recs = parse_csv(&std::fs::read_to_string(path).unwrap());
            let mut m: HashMap<u64, String> = HashMap::new();
            for ((_, f), (_, pid)) in recs[1..].iter().zip(truth) {
                let d = digits(&f[1]);
                if d.len() >= 8 && !INVALID_PHONES.contains(&f[1].as_str()) {
                    m.insert(*pid, d[d.len() - 7..].to_string());
                }
            }
            m
        };
        let (p1, p2) = (phones(&first, &t1), phones(&second, &t2));
        let common: Vec<_> = p2.keys().filter(|k| p1.contains_key(k)).collect();
        assert!(common.len() > 100, "{} people in both files", common.len());
        for k in common {
            assert_eq!(p1[k], p2[k], "person {k}");
        }
    }

    #[test]
    fn generate_plants_hard_cases() {
        let (mut family, mut office, mut namesake) = (0, 0, 0);
        for pair in 0..20_000u64 {
            let (a, b) = (person(42, 2 * pair), person(42, 2 * pair + 1));
            match pair_kind(42, pair, false) {
                PairKind::Family => {
                    family += 1;
                    assert_eq!(
                        (&a.email, &a.phone_e164, &a.last_name),
                        (&b.email, &b.phone_e164, &b.last_name)
                    );
                    assert_ne!(a.first_name, b.first_name);
                }
                PairKind::Office => {
                    office += 1;
                    assert_eq!((&a.phone_e164, &a.company), (&b.phone_e164, &b.company));
                    assert!(a.phone_e164.starts_with("+9122") || a.phone_e164.starts_with("+4420"));
                    assert_ne!((&a.first_name, &a.last_name), (&b.first_name, &b.last_name));
                    assert_ne!(a.email, b.email);
                }
                PairKind::Namesake => {
                    namesake += 1;
                    assert_eq!((&a.first_name, &a.last_name), (&b.first_name, &b.last_name));
                    assert_ne!(a.email, b.email);
                    assert_ne!(a.phone_e164, b.phone_e164);
                }
                PairKind::Plain => {}
            }
        }
        for n in [family, office, namesake] {
            assert!((40..=130).contains(&n), "{family} {office} {namesake}");
        }
    }

    #[test]
    fn generate_hard_profile_plants_many_hard_cases_sparse_rows_and_new_numbers() {
        // Planted pairs: about 6 % of pairs per kind; namesakes share a city.
        let mut kinds = [0usize; 3];
        for pair in 0..20_000u64 {
            let (a, b) = (person_in(42, 2 * pair, true), person_in(42, 2 * pair + 1, true));
            match pair_kind(42, pair, true) {
                PairKind::Family => kinds[0] += 1,
                PairKind::Office => kinds[1] += 1,
                PairKind::Namesake => {
                    kinds[2] += 1;
                    assert_eq!((&a.first_name, &a.last_name), (&b.first_name, &b.last_name));
                    assert_eq!((&a.city, a.country), (&b.city, b.country));
                    assert_ne!((&a.email, &a.phone_e164), (&b.email, &b.phone_e164));
                }
                PairKind::Plain => {}
            }
        }
        for n in kinds {
            assert!((1000..=1400).contains(&n), "{kinds:?}");
        }

        let (std_path, hard_path) = (scratch("hard-std"), scratch("hard"));
        generate_csv(&std_path, &opts(20_000)).unwrap();
        let hard = GenerateOptions {
            hard: true,
            ..opts(20_000)
        };
        let summary = generate_csv(&hard_path, &hard).unwrap();
        let std_recs = parse_csv(&std::fs::read_to_string(&std_path).unwrap());
        let recs = parse_csv(&std::fs::read_to_string(&hard_path).unwrap());
        let rows = &recs[1..];
        // Sparse rows: name and phone, nothing else a linker could use.
        let sparse = |f: &[String]| {
            !f[0].is_empty() && !f[1].is_empty() && (2..=5).all(|c| f[c].is_empty()) && f[7].is_empty()
        };
        let share = rows.iter().filter(|(_, f)| sparse(f)).count() as f64 / rows.len() as f64;
        assert!((0.17..0.23).contains(&share), "sparse share {share}");
        let std_share = std_recs[1..].iter().filter(|(_, f)| sparse(f)).count() as f64 / 20_000.0;
        assert!(std_share < 0.01, "standard sparse share {std_share}");
        // A national number keeps its country; an international one may not.
        assert!(
            rows.iter()
                .filter(|(_, f)| sparse(f) && !["+", "00", "(+"].iter().any(|p| f[1].starts_with(p)))
                .all(|(_, f)| !f[6].is_empty())
        );
        // Later appearances with a number the person's first row did not have.
        let truth = read_truth(&summary.truth_path);
        let mut first_phone: HashMap<u64, String> = HashMap::new();
        let (mut repeats, mut changed) = (0, 0);
        for ((_, f), (_, pid)) in rows.iter().zip(&truth) {
            let d = digits(&f[1]);
            if d.len() < 8 {
                continue;
            }
            let tail = d[d.len() - 8..].to_string();
            match first_phone.get(pid) {
                None => {
                    first_phone.insert(*pid, tail);
                }
                Some(t) => {
                    repeats += 1;
                    changed += usize::from(*t != tail);
                }
            }
        }
        let share = changed as f64 / repeats as f64;
        assert!(
            (0.07..0.2).contains(&share),
            "changed numbers {share} of {repeats}"
        );
        // Same options, same bytes; the standard profile is not touched by hard's draws.
        let again = scratch("hard-again");
        generate_csv(&again, &hard).unwrap();
        assert_eq!(std::fs::read(&again).unwrap(), std::fs::read(&hard_path).unwrap());
    }

    #[test]
    fn generate_messiness_and_invalid_rows() {
        let path = scratch("messy");
        generate_csv(&path, &opts(20_000)).unwrap();
        let recs = parse_csv(&std::fs::read_to_string(&path).unwrap());
        let rows = &recs[1..];
        let has = |col: usize, pred: &dyn Fn(&str) -> bool| rows.iter().any(|(_, f)| pred(&f[col]));
        for fmt in ["+91 ", "0091 ", "(+91) ", "91-"] {
            assert!(has(1, &|p| p.starts_with(fmt)), "{fmt}");
        }
        assert!(has(1, &|p| p.len() == 12
            && p.starts_with('0')
            && p.as_bytes()[6] == b'-'));
        assert!(has(1, &|p| p.starts_with("+44 7")) && has(1, &|p| p.starts_with("+1 ")));
        assert!(has(1, &|p| p.starts_with("+852 ")));
        assert!(has(2, &|e| e.contains('+')) && has(2, &|e| e.starts_with(' ')));
        assert!(has(2, &|e| e.chars().any(|c| c.is_ascii_uppercase())));
        for c in [
            "India",
            "IN",
            "IND",
            "Bharat",
            "UK",
            "U.S.A.",
            "Hong Kong SAR",
            "hong kong",
        ] {
            assert!(has(6, &|x| x == c), "{c}");
        }
        assert!(has(0, &|n| n.starts_with("Dr. ")) && has(0, &|n| n.contains("  ")));
        assert!(has(7, &|w| w.starts_with("www.")) && has(7, &|w| w.starts_with("https://")));
        // No usable contact: no phone of 8+ digits and no e-mail of shape a@b.c.
        let unusable = rows
            .iter()
            .filter(|(_, f)| {
                let e = f[2].trim();
                let email_ok = e
                    .split_once('@')
                    .is_some_and(|(l, d)| !l.is_empty() && d.contains('.') && !d.contains('@'));
                (digits(&f[1]).len() < 8 || INVALID_PHONES.contains(&f[1].as_str())) && !email_ok
            })
            .count();
        let share = unusable as f64 / rows.len() as f64;
        assert!((0.006..0.015).contains(&share), "unusable share {share}");
    }

    #[test]
    fn generate_phone_templates_fit_numbers() {
        let mut r = Rng::new(1);
        for country in [Country::In, Country::Gb, Country::Us, Country::Hk] {
            for landline_kind in [false, true] {
                let p = if landline_kind {
                    landline(country, &mut r)
                } else {
                    mobile(country, &country.cities()[0], &mut r)
                };
                for (t, _, _) in p.templates() {
                    assert_eq!(t.bytes().filter(|b| *b == b'#').count(), p.len as usize, "{t}");
                }
                assert!(p.templates().len() <= 9);
            }
        }
    }
}
