"""Synthetic department extracts for the landing zone: realistic, reproducible and streamed.

`generate` writes one extract per provider per catalogued resource, as the provider
departments would deliver them, to
`{landing}/{theme}/{resource}/{provider}/{resource}_{provider}_{as_of:%Y%m%d}.{csv|parquet|jsonl}`.

Design, in short:

* Every value is a pure function of (seed, purpose, row index[, version]) computed by a
  counter-based hash (splitmix64) over numpy arrays. Nothing depends on the chunk a row is
  generated in, any row can be recomputed on its own (enterprises look up their legal
  representative among the residents, decisions look up their enterprise) and memory is
  bounded by the chunk size, whatever the number of rows.
* Identifiers are injective by construction: a Feistel permutation of the person index is
  decomposed into (county, birth date, sequence) for the citizen identity number (GB 11643)
  and of the enterprise index into the organisation code inside the unified social credit
  code (GB 32100); decision numbers carry a permuted serial.
* Time: people, enterprises and decisions are fixed for a seed; their dates are anchored at
  `min(as_of, 2025-01-01)`, so they never lie after `as_of` and stay put for any later
  `as_of`. A changing attribute has a base value and a version `(day + phase) // period`
  (per-row phase); in each version a row departs from its base value with a small
  probability. So at any date the same small share of rows has departed, about
  `2 * share / period` of the rows change from one day to the next, and which rows change
  depends only on (seed, as_of, row), never on the chunking.
* Departments other than the authority hold subsets of the rows and disagree on a few
  values, so "one data, one source" cross-checking has work to do.
* With `defects > 0` each row has that probability of carrying exactly one defect of a
  kind that the extract's catalogue items can express; counts come back per rule name.
"""

from __future__ import annotations

import datetime
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from typing import Any, Literal, cast

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from numpy.typing import NDArray

from govlake.core import reference
from govlake.core.catalog import Catalog, Item, Resource
from govlake.core.errors import GovlakeError
from govlake.core.location import Location

Encoding = Literal["utf-8", "gbk"]
Format = Literal["csv", "parquet", "jsonl"]
ProgressCallback = Callable[[str, int], None]

Ints = NDArray[np.int64]
Floats = NDArray[np.float64]
Bools = NDArray[np.bool_]
Words = NDArray[np.uint64]

#: Rows generated per step; output does not depend on it, only memory and speed do.
DEFAULT_CHUNK_ROWS = 50_000
#: Parquet row groups have a fixed size so that files do not depend on the chunk size.
PARQUET_ROW_GROUP = 131_072

#: Defect kinds, named after the quality rules that should catch them.
DEFECT_RULES = (
    "citizen_id",
    "credit_code",
    "required",
    "division_code",
    "type",
    "not_future",
    "values",
    "range",
    "key_duplicate",
)

# Dates are anchored here (or at an earlier as_of) so that the population does not age
# away between extracts: a person's birth date is part of their identity number.
_ANCHOR = datetime.date(2025, 1, 1)
_EPOCH = datetime.date(1970, 1, 1)
_ADULT_DAYS = 6575  # 18 years
_BIRTH_SPAN = 67 * 365 + 17  # ages 18 to 85 at the anchor

# Changing attributes: (share of rows away from their base value at any date, period in days
# of a version). About 2 * share * (1 - share) / period of the rows change per day.
_ADDRESS_CHANGE = (0.05, 10)  # residence address, ~1 % a day
_MARITAL_CHANGE = (0.05, 19)  # ~0.5 % a day
_INSURANCE_CHANGE = (0.05, 19)  # ~0.5 % a day
_FIRM_PERIOD = 20  # capital and status together, ~1 % a day
_CAPITAL_SHARE = 0.08
_STATUS_SHARE = 0.03

_CIVIL_SHARE = 0.85
_HR_SHARE = 0.70
_TAX_SHARE = 0.85
_NAME_DISAGREE = 0.01
_TAX_DISAGREE = 0.01
_DIVISION_NAME_DISAGREE = 0.005

_RIC_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_RIC_CHECK = "10X98765432"
_USCC_ALPHABET = "0123456789ABCDEFGHJKLMNPQRTUWXY"
_USCC_WEIGHTS = (1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28)
_ORG_WEIGHTS = (3, 7, 9, 10, 5, 8, 4, 2)


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


# -- vocabularies -------------------------------------------------------------------------------
# Surnames with their approximate share (per cent) of the population.
_SURNAMES: tuple[tuple[str, float], ...] = (
    ("王", 7.1), ("李", 7.0), ("张", 6.8), ("刘", 5.4), ("陈", 4.6), ("杨", 3.2), ("黄", 2.5),
    ("赵", 2.3), ("吴", 2.1), ("周", 2.1), ("徐", 1.7), ("孙", 1.5), ("马", 1.5), ("朱", 1.3),
    ("胡", 1.3), ("郭", 1.2), ("何", 1.2), ("高", 1.1), ("林", 1.1), ("罗", 1.0), ("郑", 0.9),
    ("梁", 0.9), ("谢", 0.8), ("宋", 0.7), ("唐", 0.7), ("许", 0.7), ("韩", 0.7), ("冯", 0.6),
    ("邓", 0.6), ("曹", 0.6), ("彭", 0.6), ("曾", 0.5), ("肖", 0.5), ("田", 0.5), ("董", 0.5),
    ("袁", 0.5), ("潘", 0.5), ("于", 0.5), ("蒋", 0.5), ("蔡", 0.5), ("余", 0.5), ("杜", 0.4),
    ("叶", 0.4), ("程", 0.4), ("苏", 0.4), ("魏", 0.4), ("吕", 0.4), ("丁", 0.4), ("任", 0.4),
    ("沈", 0.4), ("姚", 0.3), ("卢", 0.3), ("姜", 0.3), ("崔", 0.3), ("钟", 0.3), ("谭", 0.3),
    ("陆", 0.3), ("汪", 0.3), ("范", 0.3), ("金", 0.3), ("石", 0.3), ("廖", 0.3), ("贾", 0.3),
    ("夏", 0.3), ("韦", 0.3), ("付", 0.3), ("方", 0.3), ("白", 0.2), ("邹", 0.2), ("孟", 0.2),
    ("熊", 0.2), ("秦", 0.2), ("邱", 0.2), ("江", 0.2), ("尹", 0.2), ("薛", 0.2), ("闫", 0.2),
    ("段", 0.2), ("雷", 0.2), ("侯", 0.2), ("龙", 0.2), ("史", 0.2), ("陶", 0.2), ("黎", 0.2),
    ("贺", 0.2), ("顾", 0.2), ("毛", 0.2), ("郝", 0.2), ("龚", 0.2), ("邵", 0.2), ("万", 0.2),
    ("钱", 0.2), ("严", 0.2), ("覃", 0.1), ("武", 0.2), ("戴", 0.2), ("莫", 0.1), ("孔", 0.1),
    ("向", 0.1), ("汤", 0.1), ("欧阳", 0.03), ("司马", 0.01), ("上官", 0.01), ("诸葛", 0.01),
)  # fmt: skip
# Given-name characters, each with a homophone that a clerk might type instead.
_MALE_GIVEN = _words(
    "伟玮 强蔷 磊垒 军君 勇永 杰洁 涛韬 明铭 斌彬 刚钢 辉晖 鹏朋 浩昊 俊骏 峰锋 建健 文雯 "
    "宇雨 志智 凯恺 成诚 鑫欣 华桦 东冬 飞菲 鸿宏 晨辰 阳洋 瑞睿 嘉佳 子梓 涵寒 轩宣 博柏"
)
_FEMALE_GIVEN = _words(
    "芳方 娜纳 敏闽 静婧 丽莉 艳燕 娟鹃 霞侠 玲铃 婷亭 慧惠 琳林 倩茜 红虹 梅玫 萍平 佳嘉 "
    "欣馨 怡宜 悦月 琪琦 璐露 晶菁 雯文 秀绣 桂贵 兰岚 云芸 玉钰 英瑛 颖莹 思丝 诗师"
)
_STREETS = _words(
    "人民路 解放路 中山路 建设路 和平路 新华路 胜利路 文化路 长江路 黄河路 迎宾大道 兴华大街 "
    "光明路 工业大道 朝阳路 青年路 学府路 滨河路 幸福路 友谊路 东风路 健康路 育才路 团结路 "
    "民主路 公园路 站前路 花园路 振兴大街 世纪大道 科技路 新城大道 文明路 复兴路 建国路 "
    "商业街 府前街 园区路 创业路 金融街 滨江大道 春晖路"
)
_BRAND_CHARS = (
    "华信东方恒通瑞丰鑫源金盛宏天新永中长泰安嘉利德锦海荣祥达富兴昌联创博明亿腾凯辉正亚汇远"
)
# Industry word in the name, its share, and the business scope text.
_INDUSTRIES: tuple[tuple[str, float, str], ...] = (
    ("科技", 0.16, "技术开发、技术咨询、技术服务；软件开发；计算机系统服务"),
    ("信息技术", 0.07, "信息系统集成服务；数据处理和存储支持服务；软件开发"),
    ("贸易", 0.14, "日用百货、五金交电、建筑材料销售；货物进出口"),
    ("商贸", 0.08, "食品销售；服装鞋帽、日用品零售；互联网销售（除销售需要许可的商品）"),
    ("建筑工程", 0.08, "房屋建筑工程施工；市政公用工程施工；建筑装饰工程设计与施工"),
    ("餐饮管理", 0.06, "餐饮服务；餐饮管理；食品销售"),
    ("物流", 0.05, "普通货物道路运输；仓储服务（不含危险化学品）；国内货物运输代理"),
    ("食品", 0.05, "食品生产；食品销售；农副产品收购"),
    ("医药", 0.04, "药品零售；第二类医疗器械经营；保健食品销售"),
    ("机械制造", 0.05, "通用设备制造；机械零部件加工；金属制品销售"),
    ("文化传媒", 0.06, "组织文化艺术交流活动；广告设计、制作、代理；会议及展览服务"),
    ("农业发展", 0.05, "农作物种植；农产品初级加工；农业技术推广服务"),
    ("环保科技", 0.03, "环境保护专用设备销售；污水处理及其再生利用；固体废物治理"),
    ("房地产开发", 0.02, "房地产开发经营；物业管理；房地产经纪"),
    ("实业", 0.06, "以自有资金从事投资活动；企业管理咨询；日用品销售"),
)
_SUFFIXES = (("有限公司", 0.80), ("有限责任公司", 0.14), ("股份有限公司", 0.06))
# What taxation writes instead of market regulation's suffix when the two disagree.
_SUFFIX_VARIANT = ("有限责任公司", "有限公司", "有限公司")
# Registered capital (10 000 CNY): most founders pick a round amount.
_ROUND_CAPITAL = (3, 5, 10, 20, 30, 50, 100, 200, 300, 500, 1000, 2000, 5000, 10000)
_ROUND_CAPITAL_WEIGHTS = (4, 6, 14, 8, 10, 14, 16, 8, 6, 6, 4, 2, 1, 1)
_CAPITAL_CHANGES = (1.2, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0)
_FIRM_STATUS = ("operating", "revoked", "cancelled", "moved_out")
_FIRM_STATUS_WEIGHTS = (0.86, 0.04, 0.08, 0.02)
_TAX_STATUS = ("normal", "abnormal", "deregistered")
_MARITAL = ("10", "20", "21", "22", "23", "30", "40", "90")
# Marital status shares per age band (18-24, 25-29, 30-39, 40-59, 60-74, 75+).
_MARITAL_AGE_EDGES = (25, 30, 40, 60, 75)
_MARITAL_WEIGHTS = (
    (0.860, 0.040, 0.080, 0.003, 0.001, 0.001, 0.010, 0.005),
    (0.450, 0.150, 0.360, 0.010, 0.002, 0.003, 0.020, 0.005),
    (0.120, 0.250, 0.520, 0.040, 0.010, 0.005, 0.050, 0.005),
    (0.040, 0.300, 0.460, 0.080, 0.020, 0.030, 0.065, 0.005),
    (0.020, 0.300, 0.400, 0.070, 0.020, 0.140, 0.045, 0.005),
    (0.010, 0.220, 0.300, 0.050, 0.010, 0.380, 0.025, 0.005),
)
# The two plausible next states of each marital status (same order as _MARITAL).
_MARITAL_NEXT = (("21", "20"), ("40", "30"), ("40", "30"), ("40", "30"), ("40", "30"),
                 ("22", "20"), ("22", "23"), ("20", "21"))  # fmt: skip
_INSURANCE = ("insured", "suspended", "terminated", "not_insured")
_INSURANCE_WEIGHTS = ((0.78, 0.07, 0.03, 0.12), (0.80, 0.02, 0.08, 0.10))  # under / over 60
_INSURANCE_NEXT = ("suspended", "insured", "insured", "insured")
# Ethnic composition per province (2020 census, rounded); the rest of each row is spread
# over all the other groups.
_ETHNIC_DEFAULT = {"汉族": 0.955, "回族": 0.01, "满族": 0.008, "土家族": 0.006, "苗族": 0.005,
                   "蒙古族": 0.003, "壮族": 0.003}  # fmt: skip
_ETHNIC_PROVINCES: dict[str, dict[str, float]] = {
    "15": {"汉族": 0.79, "蒙古族": 0.18, "满族": 0.02},
    "21": {"汉族": 0.84, "满族": 0.12, "蒙古族": 0.015, "回族": 0.006, "朝鲜族": 0.005},
    "22": {"汉族": 0.91, "朝鲜族": 0.04, "满族": 0.04},
    "23": {"汉族": 0.95, "满族": 0.03, "朝鲜族": 0.008},
    "45": {"汉族": 0.62, "壮族": 0.31, "瑶族": 0.03, "苗族": 0.01, "侗族": 0.01},
    "46": {"汉族": 0.84, "黎族": 0.15},
    "52": {"汉族": 0.63, "苗族": 0.12, "布依族": 0.07, "侗族": 0.04, "土家族": 0.04, "彝族": 0.02},
    "53": {"汉族": 0.66, "彝族": 0.11, "哈尼族": 0.04, "白族": 0.03, "傣族": 0.03, "壮族": 0.03},
    "54": {"汉族": 0.12, "藏族": 0.86},
    "62": {"汉族": 0.91, "回族": 0.05, "藏族": 0.02, "东乡族": 0.01},
    "63": {"汉族": 0.53, "藏族": 0.24, "回族": 0.15, "土族": 0.04, "撒拉族": 0.02},
    "64": {"汉族": 0.63, "回族": 0.36},
    "65": {"汉族": 0.42, "维吾尔族": 0.45, "哈萨克族": 0.07, "回族": 0.04},
}
_ETHNIC_OTHERS = 0.01
_PROVINCE_ABBR = {
    "11": "京", "12": "津", "13": "冀", "14": "晋", "15": "蒙", "21": "辽", "22": "吉", "23": "黑",
    "31": "沪", "32": "苏", "33": "浙", "34": "皖", "35": "闽", "36": "赣", "37": "鲁", "41": "豫",
    "42": "鄂", "43": "湘", "44": "粤", "45": "桂", "46": "琼", "50": "渝", "51": "川", "52": "黔",
    "53": "滇", "54": "藏", "61": "陕", "62": "甘", "63": "青", "64": "宁", "65": "新",
}  # fmt: skip
_MUNICIPALITIES = frozenset({"11", "12", "31", "50"})
# Placeholder prefecture names that are not part of an address.
_NO_PREFECTURE = ("市辖区", "县", "省直辖县级行政区划", "自治区直辖县级行政区划")


@dataclass(frozen=True)
class _Department:
    name: str  # e.g. 市场监督管理局
    abbr: str  # in decision numbers, e.g. 京市监罚〔2026〕00123号
    weight: float
    licence: str
    violations: tuple[tuple[str, str, str], ...]  # (act, law, article)
    tax_style: bool = False  # tax bureaus are named 国家税务总局<place>税务局


_DEPARTMENTS = (
    _Department("市场监督管理局", "市监", 0.40, "准予食品经营许可", (
        ("未按规定公示年度报告", "《中华人民共和国市场主体登记管理条例》", "第四十六条"),
        ("销售不符合食品安全标准的食品", "《中华人民共和国食品安全法》", "第一百二十四条"),
        ("发布虚假广告", "《中华人民共和国广告法》", "第五十五条"),
    )),
    _Department("生态环境局", "环", 0.12, "准予排污许可", (
        ("超标排放大气污染物", "《中华人民共和国大气污染防治法》", "第九十九条"),
        ("建设项目环境影响评价文件未经批准擅自开工建设",
         "《中华人民共和国环境影响评价法》", "第三十一条"),
    )),
    _Department("税务局", "税", 0.15, "准予增值税专用发票最高开票限额审批", (
        ("未按照规定的期限办理纳税申报和报送纳税资料", "《中华人民共和国税收征收管理法》",
         "第六十二条"),
        ("未按照规定设置、保管账簿", "《中华人民共和国税收征收管理法》", "第六十条"),
    ), tax_style=True),
    _Department("应急管理局", "应急", 0.10, "准予危险化学品经营许可", (
        ("未按照规定对从业人员进行安全生产教育和培训", "《中华人民共和国安全生产法》",
         "第九十七条"),
        ("未按照规定制定生产安全事故应急救援预案", "《中华人民共和国安全生产法》",
         "第九十七条"),
    )),
    _Department("卫生健康委员会", "卫", 0.08, "准予公共场所卫生许可", (
        ("公共场所卫生质量不符合国家卫生标准和要求", "《公共场所卫生管理条例》", "第十四条"),
    )),
    _Department("交通运输局", "交", 0.08, "准予道路运输经营许可", (
        ("未取得道路运输经营许可擅自从事道路普通货物运输经营",
         "《中华人民共和国道路运输条例》", "第六十三条"),
    )),
    _Department("住房和城乡建设局", "建", 0.07, "准予建筑工程施工许可", (
        ("未取得施工许可证擅自施工", "《建筑工程施工许可管理办法》", "第十二条"),
    )),
)  # fmt: skip
_PENALTY_AMOUNTS = (500, 1000, 2000, 3000, 5000, 10000, 20000, 30000, 50000, 100000, 200000)
_PENALTY_WEIGHTS = (8, 14, 12, 10, 14, 12, 9, 6, 6, 5, 4)


# -- public API ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class GeneratedExtract:
    """One extract written to the landing zone."""

    resource: str  # qualified name, e.g. "population.residents"
    provider: str
    location: Location
    rows: int  # data rows written, defective rows included
    defects: dict[str, int] = field(default_factory=dict)  # rule name -> rows injected


class GeneratorError(GovlakeError, ValueError):
    """The generator cannot produce what was asked (bad argument or unknown catalogue item)."""


def planned_rows(
    catalog: Catalog, *, rows: int, resources: list[str] | None = None
) -> dict[str, int]:
    """Per resource, the sum of the increments `generate` will report to `on_progress`."""
    counts = _counts(rows)
    return {r.qualified_name: counts[r.qualified_name] for r in _select(catalog, resources)}


def generate(
    catalog: Catalog,
    landing: Location,
    *,
    rows: int,
    seed: int = 7,
    defects: float = 0.0,
    encoding: Encoding = "utf-8",
    fmt: Format = "csv",
    as_of: datetime.date,
    resources: list[str] | None = None,
    on_progress: ProgressCallback | None = None,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
) -> list[GeneratedExtract]:
    """Write one extract per provider of each selected resource and describe what was written.

    `rows` is the number of residents; enterprises are a tenth of that, registered addresses
    one per enterprise, credit records a fifth, and administrative divisions always the full
    GB/T 2260 table. Output is byte-identical for the same arguments, whatever `chunk_rows`.
    """
    if rows < 1:
        raise GeneratorError(f"rows must be at least 1, got {rows}")
    if not 0.0 <= defects <= 1.0:
        raise GeneratorError(f"defects is a per-row probability in [0, 1], got {defects}")
    if encoding not in ("utf-8", "gbk"):
        raise GeneratorError(f"encoding must be utf-8 or gbk, got {encoding!r}")
    if fmt not in ("csv", "parquet", "jsonl"):
        raise GeneratorError(f"fmt must be csv, parquet or jsonl, got {fmt!r}")
    if chunk_rows < 1:
        raise GeneratorError(f"chunk_rows must be at least 1, got {chunk_rows}")
    selected = _select(catalog, resources)
    ctx = _Context.build(seed=seed, as_of=as_of, rows=rows)
    written: list[GeneratedExtract] = []
    for resource in selected:
        producer = _PRODUCERS[resource.qualified_name](ctx, resource)
        extracts: list[_Extract] = []
        try:
            for provider in resource.providers:
                extracts.append(
                    _Extract(ctx, resource, provider, producer, landing, fmt, encoding, defects)
                )
            for start in range(0, producer.total, chunk_rows):
                ids = np.arange(start, min(start + chunk_rows, producer.total), dtype=np.int64)
                for extract in extracts:
                    extract.write(ids)
                if on_progress is not None:
                    on_progress(resource.qualified_name, len(ids))
            written.extend(extract.close() for extract in extracts)
        except BaseException:
            for extract in extracts:
                extract.abort()
            raise
    return written


def _select(catalog: Catalog, resources: list[str] | None) -> list[Resource]:
    chosen = list(catalog) if resources is None else [catalog.get(name) for name in resources]
    unknown = [r.qualified_name for r in chosen if r.qualified_name not in _PRODUCERS]
    if unknown:
        raise GeneratorError(
            f"no generator for {', '.join(unknown)}; known: {', '.join(sorted(_PRODUCERS))}"
        )
    return chosen


def _counts(rows: int) -> dict[str, int]:
    firms = max(rows // 10, 1)
    return {
        "population.residents": rows,
        "legal_entity.enterprises": firms,
        "geospatial.registered_addresses": firms,
        "credit.records": max(rows // 5, 1),
        "geospatial.admin_divisions": len(reference.divisions()),
    }


# -- counter-based randomness -------------------------------------------------------------------
_MASK64 = (1 << 64) - 1


def _mix(x: Words) -> Words:
    """splitmix64 finaliser, element-wise (uint64 arithmetic wraps, as intended)."""
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return cast(Words, x ^ (x >> np.uint64(31)))


def _mix_int(value: int) -> int:
    x = (value + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


class _Rng:
    """Draws that are pure functions of (seed, label, index, ...): no state, no order."""

    def __init__(self, seed: int):
        self.seed = seed
        self._keys: dict[str, np.uint64] = {}

    def key(self, label: str) -> np.uint64:
        found = self._keys.get(label)
        if found is None:
            # crc32, not hash(): str hashes are salted per interpreter.
            value = _mix_int(_mix_int(self.seed & _MASK64) ^ zlib.crc32(label.encode()))
            found = self._keys[label] = np.uint64(value)
        return found

    def bits(self, label: str, ids: Ints, *more: Ints) -> Words:
        x = _mix(ids.astype(np.uint64) ^ self.key(label))
        for extra in more:
            x = _mix(x ^ extra.astype(np.uint64))
        return x

    def unit(self, label: str, ids: Ints, *more: Ints) -> Floats:
        """Uniform in [0, 1)."""
        return cast(Floats, (self.bits(label, ids, *more) >> np.uint64(11)) * (2.0**-53))

    def below(self, n: int | Ints, label: str, ids: Ints, *more: Ints) -> Ints:
        """Uniform integers in [0, n)."""
        return cast(Ints, (self.unit(label, ids, *more) * n).astype(np.int64))

    def pick(self, cumulative: Floats, label: str, ids: Ints, *more: Ints) -> Ints:
        """Index drawn with the weights whose normalised cumulative sum is `cumulative`."""
        u = self.unit(label, ids, *more)
        return np.minimum(np.searchsorted(cumulative, u, side="right"), len(cumulative) - 1)

    def version(self, label: str, ids: Ints, day: int, period: int) -> Ints:
        """Which version of a changing attribute is current on `day`; a per-row phase spreads
        the changes evenly over the days."""
        return (day + self.below(period, f"{label}.phase", ids)) // period

    def departed(
        self, label: str, ids: Ints, day: int, change: tuple[float, int]
    ) -> tuple[Bools, Ints]:
        """Whether each row's attribute departs from its base value on `day`, and the version
        (to seed the departed value with)."""
        share, period = change
        version = self.version(label, ids, day, period)
        return self.unit(label, ids, version) < share, version

    def permute(self, label: str, ids: Ints, size: int) -> Ints:
        """A bijection of [0, size): a 4-round Feistel network with cycle walking."""
        half = max(1, ((size - 1).bit_length() + 1) // 2)
        mask = np.uint64((1 << half) - 1)
        shift = np.uint64(half)
        keys = [self.key(f"{label}#{r}") for r in range(4)]

        def rounds(x: Words) -> Words:
            left, right = x >> shift, x & mask
            for k in keys:
                left, right = right, left ^ (_mix(right ^ k) & mask)
            return cast(Words, (left << shift) | right)

        out = rounds(ids.astype(np.uint64))
        outside = out >= np.uint64(size)
        while outside.any():
            out[outside] = rounds(out[outside])
            outside = out >= np.uint64(size)
        return out.astype(np.int64)


def _cumulative(weights: tuple[float, ...] | list[float] | Floats) -> Floats:
    total = np.cumsum(np.asarray(weights, dtype=np.float64))
    return cast(Floats, total / total[-1])


# -- formatting ---------------------------------------------------------------------------------
def _strings(values: list[str] | tuple[str, ...]) -> pa.Array:
    return pa.array(list(values), type=pa.string())


def _text(values: Ints) -> pa.Array:
    return pc.cast(pa.array(values), pa.string())


def _padded(values: Ints, width: int) -> pa.Array:
    return pc.utf8_lpad(_text(values), width, "0")


def _join(*parts: Any) -> pa.Array:
    return pc.binary_join_element_wise(*parts, "")


def _dates(days: Ints) -> pa.Array:
    return pa.array(days.astype(np.int32), type=pa.int32()).cast(pa.date32()).cast(pa.string())


def _fixed(scaled: Ints, places: int) -> pa.Array:
    """Integers scaled by 10**places as decimal text: 123450, 2 -> "1234.50"."""
    unit = 10**places
    whole, frac = np.divmod(np.abs(scaled), unit)
    sign = pc.if_else(pa.array(scaled < 0), "-", "")
    return _join(sign, _text(whole), ".", _padded(frac, places))


def _degrees(values: Floats) -> pa.Array:
    return _fixed(np.rint(values * 1e6).astype(np.int64), 6)


def _ymd(days: Ints) -> tuple[Ints, Ints, Ints]:
    stamps = days.astype("datetime64[D]")
    years = stamps.astype("datetime64[Y]")
    months = stamps.astype("datetime64[M]")
    return (
        years.astype(np.int64) + 1970,
        (months - years).astype(np.int64) + 1,
        (stamps - months).astype(np.int64) + 1,
    )


def _day(value: datetime.date) -> int:
    return (value - _EPOCH).days


# -- places -------------------------------------------------------------------------------------
def _short_place(name: str) -> str:
    """北京市 -> 北京, 广西壮族自治区 -> 广西, 延边朝鲜族自治州 -> 延边, 大兴区 -> 大兴."""
    for suffix in _words("特别行政区 自治区 自治州 自治县 自治旗 地区 省 市 盟 区 县 旗"):
        if name.endswith(suffix) and len(name) - len(suffix) >= 2:
            name = name[: -len(suffix)]
            break
    groups = _group_words()
    stripped = True
    while stripped:
        stripped = False
        for group in groups:
            if name.endswith(group) and len(name) - len(group) >= 2:
                name = name[: -len(group)]
                stripped = True
                break
    return name


@cache
def _group_words() -> tuple[str, ...]:
    # Longest first, so that 维吾尔族 goes before 维吾尔 and 族 never dangles.
    words = {g for e in reference.ethnic_groups() for g in (e, e.removesuffix("族"))}
    return tuple(sorted(words, key=len, reverse=True))


@dataclass(frozen=True)
class _Places:
    """County-level divisions where people live and enterprises register, as arrays."""

    code: Ints
    code_text: pa.Array
    prefix: pa.Array  # address prefix: 北京市大兴区, 河北省石家庄市长安区
    city: pa.Array  # short city name for enterprise names: 北京, 石家庄
    city_authority: pa.Array  # 北京市, 石家庄市, 仙桃市
    county_authority: pa.Array  # 北京市大兴区, 石家庄市长安区, 仙桃市
    province_abbr: pa.Array  # 京
    ethnic_row: Ints  # row of the ethnicity table
    longitude: Floats
    latitude: Floats
    slot_start: Ints  # identity-number sequences of each county: [start, end)
    slot_end: Ints
    cumulative: Floats  # county choice weights, proportional to the sequences

    @property
    def slots(self) -> int:
        return int(self.slot_end[-1])


@cache
def _places() -> _Places:
    by_code = {d.code: d for d in reference.divisions()}
    counties = [
        d
        for d in reference.divisions()
        if d.level == "county"
        and d.name != "市辖区"
        and d.longitude is not None
        and d.latitude is not None
        and d.code[:2] in _PROVINCE_ABBR
        and not d.name.endswith(("岛", "海域"))
    ]
    prefix, city, city_auth, county_auth, slots, rows = [], [], [], [], [], []
    provinces = sorted(_ETHNIC_PROVINCES)
    for d in counties:
        province = by_code[d.code[:2] + "0000"]
        parent = by_code.get(d.code[:4] + "00")
        prefecture = parent.name if parent and parent.name not in _NO_PREFECTURE else None
        # Municipalities are their own city; counties under the province have no city.
        city_full = province.name if d.code[:2] in _MUNICIPALITIES else prefecture or d.name
        prefix.append(province.name + (prefecture or "") + d.name)
        city.append(_short_place(city_full))
        city_auth.append(city_full)
        county_auth.append(city_full if city_full == d.name else city_full + d.name)
        # Urban districts hold more people than county-level cities, which hold more than
        # rural counties; the share follows the identity-number sequences given to each.
        slots.append(999 if d.name.endswith("区") else 399 if d.name.endswith("市") else 249)
        code2 = d.code[:2]
        rows.append(provinces.index(code2) + 1 if code2 in _ETHNIC_PROVINCES else 0)
    slot_end = np.cumsum(np.asarray(slots, dtype=np.int64))
    return _Places(
        code=np.asarray([int(d.code) for d in counties], dtype=np.int64),
        code_text=_strings([d.code for d in counties]),
        prefix=_strings(prefix),
        city=_strings(city),
        city_authority=_strings(city_auth),
        county_authority=_strings(county_auth),
        province_abbr=_strings([_PROVINCE_ABBR[d.code[:2]] for d in counties]),
        ethnic_row=np.asarray(rows, dtype=np.int64),
        longitude=np.asarray([d.longitude for d in counties], dtype=np.float64),
        latitude=np.asarray([d.latitude for d in counties], dtype=np.float64),
        slot_start=slot_end - np.asarray(slots, dtype=np.int64),
        slot_end=slot_end,
        cumulative=_cumulative(np.asarray(slots, dtype=np.float64)),
    )


@cache
def _ethnic_table() -> tuple[pa.Array, Floats]:
    """The 56 groups and, per row (0 = default, then provinces in code order), cumulative
    shares."""
    groups = reference.ethnic_groups()
    rows = [_ETHNIC_DEFAULT] + [_ETHNIC_PROVINCES[p] for p in sorted(_ETHNIC_PROVINCES)]
    table = np.zeros((len(rows), len(groups)))
    for r, shares in enumerate(rows):
        named = sum(shares.values())
        rest = [g for g in groups if g not in shares]
        for g in rest:
            table[r, groups.index(g)] = max(1.0 - named, _ETHNIC_OTHERS) / len(rest)
        for g, share in shares.items():
            table[r, groups.index(g)] = share
    cumulative = np.cumsum(table, axis=1)
    return _strings(groups), cumulative / cumulative[:, -1:]


# -- context ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Context:
    seed: int
    as_of: datetime.date
    as_of_day: int
    anchor_day: int
    residents: int
    enterprises: int
    records: int
    rng: _Rng
    places: _Places

    @classmethod
    def build(cls, *, seed: int, as_of: datetime.date, rows: int) -> _Context:
        counts = _counts(rows)
        return cls(
            seed=seed,
            as_of=as_of,
            as_of_day=_day(as_of),
            anchor_day=_day(min(as_of, _ANCHOR)),
            residents=rows,
            enterprises=counts["legal_entity.enterprises"],
            records=counts["credit.records"],
            rng=_Rng(seed),
            places=_places(),
        )

    def dates_between(self, label: str, ids: Ints, low: Ints, high: Ints) -> Ints:
        """A day in [low, high] (high wins when the bounds cross)."""
        low = np.minimum(low, high)
        return low + self.rng.below(high - low + 1, label, ids)


# -- people -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _People:
    ids: Ints
    county: Ints  # birthplace county (index into _Places) = first six digits of the id
    birth_day: Ints
    seq: Ints  # 1..999; odd = male
    surname: Ints
    given: Ints  # index into the given-name table, first character
    given2: Ints  # second character, -1 for one-character given names

    @property
    def male(self) -> Bools:
        return cast(Bools, self.seq % 2 == 1)


@cache
def _name_tables() -> tuple[Floats, pa.Array, pa.Array, pa.Array, int]:
    surname_cum = _cumulative([w for _, w in _SURNAMES])
    surnames = _strings([s for s, _ in _SURNAMES])
    pairs = _MALE_GIVEN + _FEMALE_GIVEN
    given = _strings([p[0] for p in pairs])
    variants = _strings([p[1] for p in pairs])
    return surname_cum, surnames, given, variants, len(_MALE_GIVEN)


def _people(ctx: _Context, ids: Ints) -> _People:
    rng, places = ctx.rng, ctx.places
    # One scrambled number per person, split into (county sequence, birth day): distinct
    # people get distinct identity numbers by construction.
    scrambled = rng.permute("person.id", ids, places.slots * _BIRTH_SPAN)
    slot, day = np.divmod(scrambled, _BIRTH_SPAN)
    county = np.searchsorted(places.slot_end, slot, side="right").astype(np.int64)
    seq = slot - places.slot_start[county] + 1
    male = seq % 2 == 1
    surname_cum, _, _, _, n_male = _name_tables()
    n_female = len(_FEMALE_GIVEN)
    first = np.where(
        male,
        rng.below(n_male, "person.given1", ids),
        n_male + rng.below(n_female, "person.given1", ids),
    )
    second = np.where(
        male,
        rng.below(n_male, "person.given2", ids),
        n_male + rng.below(n_female, "person.given2", ids),
    )
    one_char = rng.unit("person.given.length", ids) < 0.25
    return _People(
        ids=ids,
        county=county,
        birth_day=ctx.anchor_day - _ADULT_DAYS - day,
        seq=seq,
        surname=rng.pick(surname_cum, "person.surname", ids),
        given=first,
        given2=np.where(one_char, -1, second),
    )


def _citizen_ids(ctx: _Context, people: _People) -> pa.Array:
    years, months, days = _ymd(people.birth_day)
    body = ctx.places.code[people.county] * 10**11 + (years * 10000 + months * 100 + days) * 1000
    body = body + people.seq
    total = np.zeros(len(body), dtype=np.int64)
    rest = body.copy()
    for weight in reversed(_RIC_WEIGHTS):
        rest, digit = np.divmod(rest, 10)
        total += digit * weight
    return _join(_text(body), _strings(list(_RIC_CHECK)).take(pa.array(total % 11)))


def _names(people: _People, variant: Bools | None = None) -> pa.Array:
    """Full names; where `variant` is set the last character is a homophone."""
    _, surnames, given, variants, _ = _name_tables()
    two = people.given2 >= 0
    last = pa.array(np.where(two, people.given2, people.given))
    last_text = given.take(last)
    if variant is not None and variant.any():
        last_text = pc.if_else(pa.array(variant), variants.take(last), last_text)
    first = pc.if_else(pa.array(two), given.take(pa.array(people.given)), "")
    return _join(surnames.take(pa.array(people.surname)), first, last_text)


def _street_address(ctx: _Context, label: str, county: Ints, ids: Ints, *more: Ints) -> pa.Array:
    rng = ctx.rng
    streets = _strings(_STREETS)
    street = streets.take(pa.array(rng.below(len(_STREETS), f"{label}.street", ids, *more)))
    number = _text(1 + rng.below(300, f"{label}.number", ids, *more))
    building = _text(1 + rng.below(20, f"{label}.building", ids, *more))
    unit = _text(1 + rng.below(6, f"{label}.unit", ids, *more))
    room = _text(
        (1 + rng.below(30, f"{label}.floor", ids, *more)) * 100
        + 1
        + rng.below(4, f"{label}.room", ids, *more)
    )
    flat = rng.unit(f"{label}.flat", ids, *more) < 0.6
    tail = pc.if_else(pa.array(flat), _join("院", building, "号楼", unit, "单元", room, "室"), "")
    return _join(ctx.places.prefix.take(pa.array(county)), street, number, "号", tail)


class _Producer:
    """Rows of one resource: which ids each provider holds and their column values."""

    total: int

    def __init__(self, ctx: _Context, resource: Resource):
        self.ctx = ctx
        self.resource = resource

    def member(self, provider: str, ids: Ints) -> Bools:
        return np.ones(len(ids), dtype=np.bool_)

    def columns(self, provider: str, ids: Ints) -> dict[str, pa.Array]:
        """Values of the provider's items for `ids` (all of them members)."""
        raise NotImplementedError

    def keys(self, provider: str, ids: Ints) -> dict[str, pa.Array]:
        """The clean key values of `ids`, for duplicate-key defects."""
        values = self.columns(provider, ids)
        return {k: values[k] for k in self.resource.key}

    def _unknown(self, provider: str) -> GeneratorError:
        return GeneratorError(
            f"{self.resource.qualified_name}: no generator for provider {provider!r}"
        )


class _Residents(_Producer):
    def __init__(self, ctx: _Context, resource: Resource):
        super().__init__(ctx, resource)
        self.total = ctx.residents

    def member(self, provider: str, ids: Ints) -> Bools:
        if provider == "civil_affairs":
            return self.ctx.rng.unit("residents.civil", ids) < _CIVIL_SHARE
        if provider == "human_resources":
            return self.ctx.rng.unit("residents.hr", ids) < _HR_SHARE
        return super().member(provider, ids)

    def keys(self, provider: str, ids: Ints) -> dict[str, pa.Array]:
        return {"citizen_id": _citizen_ids(self.ctx, _people(self.ctx, ids))}

    def columns(self, provider: str, ids: Ints) -> dict[str, pa.Array]:
        ctx, rng = self.ctx, self.ctx.rng
        people = _people(ctx, ids)
        out = {"citizen_id": _citizen_ids(ctx, people)}
        if provider == "public_security":
            out["name"] = _names(people)
            out["gender"] = pc.if_else(pa.array(people.male), "1", "2")
            groups, cumulative = _ethnic_table()
            rows = cumulative[ctx.places.ethnic_row[people.county]]
            u = rng.unit("residents.ethnicity", ids)
            group = np.minimum((u[:, None] >= rows).sum(axis=1), rows.shape[1] - 1)
            out["ethnicity"] = groups.take(pa.array(group))
            out["birth_date"] = _dates(people.birth_day)
            # A few people moved their household registration away from their birthplace.
            transferred = rng.unit("residents.transferred", ids) < 0.05
            elsewhere = rng.pick(ctx.places.cumulative, "residents.household", ids)
            household = np.where(transferred, elsewhere, people.county)
            out["household_division_code"] = ctx.places.code_text.take(pa.array(household))
            # Most people live where they are registered; some have moved (recently: these
            # are the rows that change between extracts).
            away = rng.unit("residents.away", ids) < 0.15
            lives = np.where(
                away, rng.pick(ctx.places.cumulative, "residents.residence", ids), household
            )
            base = _street_address(ctx, "residents.home", lives, ids)
            moved, version = rng.departed("residents.moving", ids, ctx.as_of_day, _ADDRESS_CHANGE)
            if moved.any():
                movers = np.flatnonzero(moved)
                far = rng.unit("residents.far", ids[movers], version[movers]) < 0.3
                target = np.where(
                    far,
                    rng.pick(ctx.places.cumulative, "residents.new", ids[movers], version[movers]),
                    lives[movers],
                )
                new = _street_address(
                    ctx, "residents.new", target, ids[movers], version[movers]
                ).to_pylist()
                base = _replace(base, movers, new)
            out["residence_address"] = base
        elif provider == "civil_affairs":
            out["name"] = _names(people, rng.unit("residents.civil.name", ids) < _NAME_DISAGREE)
            out["marital_status"] = self._marital(people)
        elif provider == "human_resources":
            out["name"] = _names(people, rng.unit("residents.hr.name", ids) < _NAME_DISAGREE)
            status, since = self._insurance(people)
            out["social_insurance_status"] = status
            out["insured_since"] = since
        else:
            raise self._unknown(provider)
        return out

    def _age(self, people: _People) -> Floats:
        return cast(Floats, (self.ctx.anchor_day - people.birth_day) / 365.25)

    def _marital(self, people: _People) -> pa.Array:
        rng, ids = self.ctx.rng, people.ids
        band = np.searchsorted(np.asarray(_MARITAL_AGE_EDGES), self._age(people), side="right")
        table = np.cumsum(np.asarray(_MARITAL_WEIGHTS), axis=1)
        table = table / table[:, -1:]
        u = rng.unit("residents.marital", ids)
        base = np.minimum((u[:, None] >= table[band]).sum(axis=1), len(_MARITAL) - 1)
        changed, version = rng.departed(
            "residents.marital.change", ids, self.ctx.as_of_day, _MARITAL_CHANGE
        )
        which = rng.below(2, "residents.marital.next", ids, version)
        codes = _strings(_MARITAL)
        nexts = _strings([n for pair in _MARITAL_NEXT for n in pair])
        return pc.if_else(
            pa.array(changed), nexts.take(pa.array(base * 2 + which)), codes.take(pa.array(base))
        )

    def _insurance(self, people: _People) -> tuple[pa.Array, pa.Array]:
        ctx, rng, ids = self.ctx, self.ctx.rng, people.ids
        old = self._age(people) >= 60
        young_cum, old_cum = (_cumulative(w) for w in _INSURANCE_WEIGHTS)
        base = np.where(
            old,
            rng.pick(old_cum, "residents.insurance", ids),
            rng.pick(young_cum, "residents.insurance", ids),
        )
        changed, _ = rng.departed(
            "residents.insurance.change", ids, ctx.as_of_day, _INSURANCE_CHANGE
        )
        next_index = np.asarray([_INSURANCE.index(n) for n in _INSURANCE_NEXT])
        status = np.where(changed, next_index[base], base)
        # Pension insurance as we know it dates from the 1990s; nobody joins before 18.
        since = ctx.dates_between(
            "residents.insured_since",
            ids,
            np.maximum(people.birth_day + _ADULT_DAYS, _day(datetime.date(1992, 1, 1))),
            np.full(len(ids), ctx.anchor_day),
        )
        insured = status != _INSURANCE.index("not_insured")
        since_text = pc.if_else(pa.array(insured), _dates(since), pa.scalar(None, pa.string()))
        return _strings(_INSURANCE).take(pa.array(status)), since_text


# -- enterprises --------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Firms:
    ids: Ints
    county: Ints
    org: Ints  # 8-digit organisation code body
    brand1: Ints
    brand2: Ints
    industry: Ints
    suffix: Ints
    representative: Ints  # person index
    established_day: Ints
    capital_cents: Ints  # base registered capital, in 0.01 of 10 000 CNY
    status: Ints  # base status (index into _FIRM_STATUS), before recent changes


def _firms(ctx: _Context, ids: Ints) -> _Firms:
    rng = ctx.rng
    representative = rng.below(ctx.residents, "firm.representative", ids)
    rep_birth = _people(ctx, representative).birth_day
    established = ctx.dates_between(
        "firm.established",
        ids,
        np.maximum(rep_birth + _ADULT_DAYS, _day(datetime.date(1993, 1, 1))),
        np.full(len(ids), ctx.anchor_day),
    )
    round_amount = np.asarray(_ROUND_CAPITAL, dtype=np.int64)[
        rng.pick(_cumulative(_ROUND_CAPITAL_WEIGHTS), "firm.capital.round", ids)
    ]
    free_amount = np.rint(10 ** (0.3 + 3.7 * rng.unit("firm.capital.free", ids)) * 100)
    capital = np.where(
        rng.unit("firm.capital.kind", ids) < 0.7, round_amount * 100, free_amount.astype(np.int64)
    )
    return _Firms(
        ids=ids,
        county=rng.pick(ctx.places.cumulative, "firm.county", ids),
        # Distinct organisation codes for distinct enterprises, so credit codes are unique.
        org=rng.permute("firm.org", ids, 10**8),
        brand1=rng.below(len(_BRAND_CHARS), "firm.brand1", ids),
        brand2=rng.below(len(_BRAND_CHARS), "firm.brand2", ids),
        industry=rng.pick(_cumulative([w for _, w, _ in _INDUSTRIES]), "firm.industry", ids),
        suffix=rng.pick(_cumulative([w for _, w in _SUFFIXES]), "firm.suffix", ids),
        representative=representative,
        established_day=established,
        capital_cents=capital,
        status=rng.pick(_cumulative(_FIRM_STATUS_WEIGHTS), "firm.status", ids),
    )


def _credit_codes(ctx: _Context, firms: _Firms) -> pa.Array:
    # GB 11714 check character of the organisation code.
    org_total = np.zeros(len(firms.org), dtype=np.int64)
    rest = firms.org.copy()
    for weight in reversed(_ORG_WEIGHTS):
        rest, digit = np.divmod(rest, 10)
        org_total += digit * weight
    org_check = 11 - org_total % 11  # 10 -> X, 11 -> 0
    org_value = np.where(org_check == 11, 0, np.where(org_check == 10, 29, org_check))
    org_char = np.where(org_check == 11, 0, org_check)  # index into "0123456789X"
    # GB 32100 check character over "91" + division code + organisation code.
    total = 9 * _USCC_WEIGHTS[0] + 1 * _USCC_WEIGHTS[1] + org_value * _USCC_WEIGHTS[16]
    rest = ctx.places.code[firms.county].copy()
    for weight in reversed(_USCC_WEIGHTS[2:8]):
        rest, digit = np.divmod(rest, 10)
        total = total + digit * weight
    rest = firms.org.copy()
    for weight in reversed(_USCC_WEIGHTS[8:16]):
        rest, digit = np.divmod(rest, 10)
        total = total + digit * weight
    check = (31 - total % 31) % 31
    return _join(
        "91",
        ctx.places.code_text.take(pa.array(firms.county)),
        _padded(firms.org, 8),
        _strings(list("0123456789X")).take(pa.array(org_char)),
        _strings(list(_USCC_ALPHABET)).take(pa.array(check)),
    )


def _firm_names(ctx: _Context, firms: _Firms, variant: Bools | None = None) -> pa.Array:
    """Enterprise names; where `variant` is set, the form another department typed: with 市
    after the city, or another company-form suffix."""
    brand = _strings(list(_BRAND_CHARS))
    city = ctx.places.city.take(pa.array(firms.county))
    suffix = _strings([s for s, _ in _SUFFIXES]).take(pa.array(firms.suffix))
    if variant is not None and variant.any():
        with_city = ctx.rng.unit("firm.name.variant", firms.ids) < 0.5
        city = pc.if_else(pa.array(variant & with_city), _join(city, "市"), city)
        other = _strings(_SUFFIX_VARIANT).take(pa.array(firms.suffix))
        suffix = pc.if_else(pa.array(variant & ~with_city), other, suffix)
    return _join(
        city,
        brand.take(pa.array(firms.brand1)),
        brand.take(pa.array(firms.brand2)),
        _strings([i for i, _, _ in _INDUSTRIES]).take(pa.array(firms.industry)),
        suffix,
    )


def _firm_state(ctx: _Context, firms: _Firms) -> tuple[Ints, Ints]:
    """Current (status, capital in cents): a few enterprises changed their capital or
    status (operating <-> revoked, cancelled or moved out) lately."""
    rng, ids = ctx.rng, firms.ids
    version = rng.version("firm.version", ids, ctx.as_of_day, _FIRM_PERIOD)
    capital_event = rng.unit("firm.capital.change", ids, version) < _CAPITAL_SHARE
    status_event = rng.unit("firm.status.change", ids, version) < _STATUS_SHARE
    factor = np.asarray(_CAPITAL_CHANGES)[
        rng.below(len(_CAPITAL_CHANGES), "firm.factor", ids, version)
    ]
    capital = np.where(
        capital_event, np.rint(firms.capital_cents * factor).astype(np.int64), firms.capital_cents
    )
    closing = 1 + rng.below(3, "firm.closing", ids, version)  # revoked, cancelled, moved_out
    changed_status = np.where(firms.status == 0, closing, 0)
    status = np.where(status_event, changed_status, firms.status)
    return status, capital


class _Enterprises(_Producer):
    def __init__(self, ctx: _Context, resource: Resource):
        super().__init__(ctx, resource)
        self.total = ctx.enterprises

    def member(self, provider: str, ids: Ints) -> Bools:
        if provider == "taxation":
            return self.ctx.rng.unit("firm.tax", ids) < _TAX_SHARE
        return super().member(provider, ids)

    def keys(self, provider: str, ids: Ints) -> dict[str, pa.Array]:
        return {"credit_code": _credit_codes(self.ctx, _firms(self.ctx, ids))}

    def columns(self, provider: str, ids: Ints) -> dict[str, pa.Array]:
        ctx, rng = self.ctx, self.ctx.rng
        firms = _firms(ctx, ids)
        status, capital = _firm_state(ctx, firms)
        out = {"credit_code": _credit_codes(ctx, firms)}
        if provider == "market_regulation":
            people = _people(ctx, firms.representative)
            out["name"] = _firm_names(ctx, firms)
            out["legal_representative"] = _names(people)
            out["legal_representative_id"] = _citizen_ids(ctx, people)
            out["registered_capital"] = _fixed(capital, 2)
            out["division_code"] = ctx.places.code_text.take(pa.array(firms.county))
            out["status"] = _strings(_FIRM_STATUS).take(pa.array(status))
            out["established_on"] = _dates(firms.established_day)
            scopes = _strings([s for _, _, s in _INDUSTRIES])
            out["business_scope"] = scopes.take(pa.array(firms.industry))
        elif provider == "taxation":
            disagree = rng.unit("firm.tax.disagree", ids) < _TAX_DISAGREE
            on_name = rng.unit("firm.tax.disagree.kind", ids) < 0.5
            out["name"] = _firm_names(ctx, firms, disagree & on_name)
            # A capital typed in CNY instead of 10 000 CNY, or a stale figure.
            unit_error = rng.unit("firm.tax.capital", ids) < 0.5
            wrong = np.where(unit_error, capital * 10000, np.rint(capital * 0.8).astype(np.int64))
            out["registered_capital"] = _fixed(np.where(disagree & ~on_name, wrong, capital), 2)
            u = rng.unit("firm.tax.status", ids)
            tax = np.select(
                [status == 0, status == 1, status == 2],
                [np.where(u < 0.95, 0, 1), np.ones_like(status), np.full_like(status, 2)],
                np.where(u < 0.5, 0, 2),
            )
            out["tax_status"] = _strings(_TAX_STATUS).take(pa.array(tax))
        else:
            raise self._unknown(provider)
        return out


class _RegisteredAddresses(_Producer):
    def __init__(self, ctx: _Context, resource: Resource):
        super().__init__(ctx, resource)
        self.total = ctx.enterprises

    def keys(self, provider: str, ids: Ints) -> dict[str, pa.Array]:
        return {"credit_code": _credit_codes(self.ctx, _firms(self.ctx, ids))}

    def columns(self, provider: str, ids: Ints) -> dict[str, pa.Array]:
        if provider != "natural_resources":
            raise self._unknown(provider)
        ctx, rng, places = self.ctx, self.ctx.rng, self.ctx.places
        firms = _firms(ctx, ids)
        street = _strings(_STREETS).take(pa.array(rng.below(len(_STREETS), "address.street", ids)))
        number = _text(1 + rng.below(500, "address.number", ids))
        floor = _text(1 + rng.below(25, "address.floor", ids))
        room = _padded(1 + rng.below(30, "address.room", ids), 2)
        building = _text(1 + rng.below(12, "address.building", ids))
        # Offices give floor and room (5层512室); business parks a building (3号楼).
        office = rng.unit("address.office", ids) < 0.5
        tail = pc.if_else(
            pa.array(office), _join(floor, "层", floor, room, "室"), _join(building, "号楼")
        )
        # Geocoded points scatter around the county centroid (about +/- 5 km).
        lon = places.longitude[firms.county] + (rng.unit("address.lon", ids) - 0.5) * 0.1
        lat = places.latitude[firms.county] + (rng.unit("address.lat", ids) - 0.5) * 0.1
        geocoded = ctx.dates_between(
            "address.geocoded", ids, firms.established_day, np.full(len(ids), ctx.anchor_day)
        )
        return {
            "credit_code": _credit_codes(ctx, firms),
            "address": _join(
                places.prefix.take(pa.array(firms.county)), street, number, "号", tail
            ),
            "division_code": places.code_text.take(pa.array(firms.county)),
            "longitude": _degrees(lon),
            "latitude": _degrees(lat),
            "geocoded_on": _dates(geocoded),
        }


class _CreditRecords(_Producer):
    def __init__(self, ctx: _Context, resource: Resource):
        super().__init__(ctx, resource)
        self.total = ctx.records

    def columns(self, provider: str, ids: Ints) -> dict[str, pa.Array]:
        if provider != "development_reform":
            raise self._unknown(provider)
        ctx, rng, places = self.ctx, self.ctx.rng, self.ctx.places
        firms = _firms(ctx, rng.below(ctx.enterprises, "record.firm", ids))
        penalty = rng.unit("record.type", ids) < 0.4
        dept = rng.pick(_cumulative([d.weight for d in _DEPARTMENTS]), "record.dept", ids)
        decided = ctx.dates_between(
            "record.date",
            ids,
            np.maximum(firms.established_day, ctx.anchor_day - 5 * 365),
            np.full(len(ids), ctx.anchor_day),
        )
        year, _, _ = _ymd(decided)
        # Serials are a permutation of the record index: decision numbers never repeat.
        serial = rng.permute("record.serial", ids, ctx.records) + 1
        abbr = _strings([d.abbr for d in _DEPARTMENTS]).take(pa.array(dept))
        number = _join(
            places.province_abbr.take(pa.array(firms.county)),
            abbr,
            pc.if_else(pa.array(penalty), "罚", "许"),
            "〔",
            _text(year),
            "〕",
            _padded(serial, 5),
            "号",
        )
        county_level = rng.unit("record.level", ids) < 0.6
        place = pc.if_else(
            pa.array(county_level),
            places.county_authority.take(pa.array(firms.county)),
            places.city_authority.take(pa.array(firms.county)),
        )
        tax_style = np.asarray([d.tax_style for d in _DEPARTMENTS])[dept]
        issuer = _join(
            pc.if_else(pa.array(tax_style), "国家税务总局", ""),
            place,
            _strings([d.name for d in _DEPARTMENTS]).take(pa.array(dept)),
        )
        yuan = np.asarray(_PENALTY_AMOUNTS, dtype=np.int64)[
            rng.pick(_cumulative(_PENALTY_WEIGHTS), "record.amount", ids)
        ]
        amount = pc.if_else(pa.array(penalty), _fixed(yuan * 100, 2), pa.scalar(None, pa.string()))
        # Penalties stay public for one or three years; licences last five.
        publicity = np.where(rng.unit("record.publicity", ids) < 0.5, 365, 3 * 365)
        until = decided + np.where(penalty, publicity, 5 * 365)
        until_text = _dates(until)
        acts = [(i, v) for i, d in enumerate(_DEPARTMENTS) for v in d.violations]
        starts = np.cumsum([0] + [len(d.violations) for d in _DEPARTMENTS])
        counts = np.asarray([len(d.violations) for d in _DEPARTMENTS])
        act = starts[dept] + rng.below(counts[dept], "record.act", ids)
        violation = _strings([v[0] for _, v in acts]).take(pa.array(act))
        law = _strings([v[1] for _, v in acts]).take(pa.array(act))
        article = _strings([v[2] for _, v in acts]).take(pa.array(act))
        penalty_text = _join(
            "因", violation, "，违反了", law, "的有关规定，依据", law, article,
            "，决定给予警告，并处罚款人民币", _text(yuan), "元。",
        )  # fmt: skip
        licence = _strings([d.licence for d in _DEPARTMENTS]).take(pa.array(dept))
        licence_text = _join(licence, "，有效期至", until_text, "。")
        return {
            "credit_code": _credit_codes(ctx, firms),
            "decision_number": number,
            "record_type": pc.if_else(pa.array(penalty), "penalty", "licence"),
            "subject_name": _firm_names(ctx, firms),
            "issuing_department": issuer,
            "decision_date": _dates(decided),
            "penalty_amount": amount,
            "valid_until": until_text,
            "content": pc.if_else(pa.array(penalty), penalty_text, licence_text),
        }


class _AdminDivisions(_Producer):
    def __init__(self, ctx: _Context, resource: Resource):
        super().__init__(ctx, resource)
        self.divisions = reference.divisions()
        self.total = len(self.divisions)

    def member(self, provider: str, ids: Ints) -> Bools:
        if provider == "natural_resources":
            # Natural resources only publishes divisions it has a centroid for.
            return np.asarray([self.divisions[i].longitude is not None for i in ids], dtype=bool)
        return super().member(provider, ids)

    def columns(self, provider: str, ids: Ints) -> dict[str, pa.Array]:
        chosen = [self.divisions[i] for i in ids]
        out = {"division_code": _strings([d.code for d in chosen])}
        if provider == "civil_affairs":
            out["name"] = _strings([d.name for d in chosen])
            out["level"] = _strings([d.level for d in chosen])
            out["parent_code"] = pa.array([d.parent_code for d in chosen], type=pa.string())
        elif provider == "natural_resources":
            rng = self.ctx.rng
            disagree = rng.unit("division.name", ids) < _DIVISION_NAME_DISAGREE
            short = rng.unit("division.name.kind", ids) < 0.5
            swap = {"区": "县", "县": "区", "市": "县", "旗": "县"}
            names = []
            for d, wrong, use_short in zip(chosen, disagree, short, strict=True):
                name = d.name
                if wrong:
                    # Natural resources keeps short or older names for a few divisions.
                    if use_short or name[-1] not in swap:
                        name = _short_place(name) if _short_place(name) != name else name + "区"
                    else:
                        name = name[:-1] + swap[name[-1]]
                names.append(name)
            out["name"] = _strings(names)
            out["longitude"] = _degrees(np.asarray([d.longitude for d in chosen], dtype=np.float64))
            out["latitude"] = _degrees(np.asarray([d.latitude for d in chosen], dtype=np.float64))
        else:
            raise self._unknown(provider)
        return out


_PRODUCERS: dict[str, Callable[[_Context, Resource], _Producer]] = {
    "population.residents": _Residents,
    "legal_entity.enterprises": _Enterprises,
    "geospatial.registered_addresses": _RegisteredAddresses,
    "credit.records": _CreditRecords,
    "geospatial.admin_divisions": _AdminDivisions,
}


# -- defects ------------------------------------------------------------------------------------
_NUMERIC = ("integer", "bigint", "double")
_LOOKBACK = 32  # how far back a duplicated key is looked for


def _defect_options(resource: Resource, columns: list[str]) -> dict[str, list[str]]:
    """For each defect kind that this extract can carry, the columns it may hit."""
    keys = set(resource.key)
    items: list[Item] = [resource.item(c) for c in columns]
    options: dict[str, list[str]] = {
        "citizen_id": [i.name for i in items if i.check == "citizen_id"],
        "credit_code": [i.name for i in items if i.check == "credit_code"],
        "required": [i.name for i in items if i.required and i.name not in keys],
        "division_code": [
            i.name for i in items if i.check == "division_code" and i.name not in keys
        ],
        "type": [
            i.name
            for i in items
            if i.name not in keys
            and (i.type == "date" or i.type in _NUMERIC or i.type.startswith("decimal"))
        ],
        "not_future": [i.name for i in items if i.check == "not_future"],
        "values": [i.name for i in items if i.values],
        "range": [
            i.name
            for i in items
            if i.check in ("china_longitude", "china_latitude")
            or i.minimum is not None
            or i.maximum is not None
        ],
        "key_duplicate": list(resource.key),
    }
    return {kind: cols for kind, cols in options.items() if cols}


class _Extract:
    """One provider's extract of one resource: defects, then the file."""

    def __init__(
        self,
        ctx: _Context,
        resource: Resource,
        provider: str,
        producer: _Producer,
        landing: Location,
        fmt: Format,
        encoding: Encoding,
        defects: float,
    ):
        self.ctx = ctx
        self.resource = resource
        self.provider = provider
        self.producer = producer
        self.columns = resource.supplied_items(provider)
        self.rate = defects
        self.options = _defect_options(resource, self.columns)
        self.kinds = list(self.options)
        self.counts: dict[str, int] = {}
        self.rows = 0
        self.label = f"defect:{resource.qualified_name}:{provider}"
        filename = f"{resource.name}_{provider}_{ctx.as_of:%Y%m%d}.{fmt}"
        self.location = landing.child(resource.theme, resource.name, provider, filename)
        self.sink = _Sink.open(self.location, self.columns, fmt, encoding)

    def write(self, ids: Ints) -> None:
        mask = self.producer.member(self.provider, ids)
        members = ids[mask]
        if len(members) == 0:
            return
        values = self.producer.columns(self.provider, members)
        missing = [c for c in self.columns if c not in values]
        if missing:
            raise GeneratorError(
                f"{self.resource.qualified_name}: the generator does not produce "
                f"{', '.join(missing)} for {self.provider}"
            )
        if self.rate > 0:
            values = self._inject(members, values)
        table = pa.table([values[c] for c in self.columns], names=self.columns)
        self.sink.write(table)
        self.rows += len(members)

    def close(self) -> GeneratedExtract:
        self.sink.close()
        return GeneratedExtract(
            resource=self.resource.qualified_name,
            provider=self.provider,
            location=self.location,
            rows=self.rows,
            defects=dict(sorted(self.counts.items())),
        )

    def abort(self) -> None:
        self.sink.abort()

    # -- injection ------------------------------------------------------------------------------
    def _hit(self, ids: Ints) -> Bools:
        return self.ctx.rng.unit(self.label, ids) < self.rate

    def _inject(self, ids: Ints, values: dict[str, pa.Array]) -> dict[str, pa.Array]:
        rng = self.ctx.rng
        positions = np.flatnonzero(self._hit(ids))
        if len(positions) == 0:
            return values
        hit_ids = ids[positions]
        kind = rng.below(len(self.kinds), f"{self.label}.kind", hit_ids)
        column = rng.bits(f"{self.label}.column", hit_ids)
        detail = rng.bits(f"{self.label}.detail", hit_ids)
        source = np.full(len(hit_ids), -1, dtype=np.int64)
        if "key_duplicate" in self.kinds:
            dup = kind == self.kinds.index("key_duplicate")
            source[dup] = self._earlier_rows(hit_ids[dup])
            # The first rows have nothing earlier to repeat: they get the next kind instead.
            kind[dup & (source < 0)] = (self.kinds.index("key_duplicate") + 1) % len(self.kinds)
        mutated = dict(values)
        for k, name in enumerate(self.kinds):
            if name == "key_duplicate":
                # The whole key repeats, whichever key column was drawn.
                chosen = kind == k
                if chosen.any():
                    where = positions[chosen]
                    keys = self.producer.keys(self.provider, source[chosen])
                    for key in self.resource.key:
                        mutated[key] = _replace(mutated[key], where, keys[key].to_pylist())
                    self.counts[name] = self.counts.get(name, 0) + int(chosen.sum())
                continue
            cols = self.options[name]
            for c, col in enumerate(cols):
                chosen = (kind == k) & (column % np.uint64(len(cols)) == np.uint64(c))
                if not chosen.any():
                    continue
                where = positions[chosen]
                old = mutated[col].take(pa.array(where)).to_pylist()
                new = [
                    self._corrupt(name, col, value, int(d))
                    for value, d in zip(old, detail[chosen], strict=True)
                ]
                mutated[col] = _replace(mutated[col], where, new)
                self.counts[name] = self.counts.get(name, 0) + int(chosen.sum())
        return mutated

    def _earlier_rows(self, ids: Ints) -> Ints:
        """For each id, the nearest earlier row of this extract without a defect of its own
        (its key is the clean one), or -1 if there is none close by."""
        found = np.full(len(ids), -1, dtype=np.int64)
        for back in range(1, _LOOKBACK + 1):
            todo = np.flatnonzero(found < 0)
            if len(todo) == 0:
                break
            candidate = ids[todo] - back
            ok = candidate >= 0
            safe = np.where(ok, candidate, 0)
            ok &= self.producer.member(self.provider, safe) & ~self._hit(safe)
            found[todo[ok]] = candidate[ok]
        return found

    def _corrupt(self, kind: str, column: str, value: str | None, detail: int) -> str | None:
        item = self.resource.item(column)
        if kind == "citizen_id":
            text = value or "110101199001011234"
            options = _RIC_CHECK.replace(text[-1], "")
            return text[:-1] + options[detail % len(options)]
        if kind == "credit_code":
            text = value or "91110000600037341L"
            options = _USCC_ALPHABET.replace(text[-1], "")
            return text[:-1] + options[detail % len(options)]
        if kind == "required":
            return None
        if kind == "division_code":
            # No GB/T 2260 code starts with 9.
            return f"9{detail % 100000:05d}"
        if kind == "type":
            if item.type == "date":
                year = value[:4] if value else "2023"
                return f"{year}-02-30" if detail % 2 else f"{year}-13-01"
            if value and "." in value:
                return value.replace(".", ",") + "x"
            return "12,5x"
        if kind == "not_future":
            return (self.ctx.as_of + datetime.timedelta(days=1 + detail % 365)).isoformat()
        if kind == "values":
            allowed = set(item.values or [])
            wrong = [v for v in ("unknown", "99", "N/A", "其他") if v not in allowed]
            return wrong[detail % len(wrong)]
        if kind == "range":
            if item.check == "china_longitude":
                return f"{(detail % 60_000_000) / 1e6:.6f}"
            if item.check == "china_latitude":
                return f"{60 + (detail % 29_000_000) / 1e6:.6f}"
            if item.minimum is not None:
                return f"{item.minimum - 1 - detail % 100000:.2f}"
            return f"{(item.maximum or 0) + 1 + detail % 100000:.2f}"
        raise AssertionError(f"unknown defect kind {kind}")


def _replace(array: pa.Array, positions: Ints, new: list[str | None]) -> pa.Array:
    mask = np.zeros(len(array), dtype=np.bool_)
    mask[positions] = True
    return pc.replace_with_mask(array, pa.array(mask), pa.array(new, type=pa.string()))


# -- files --------------------------------------------------------------------------------------
class _Sink:
    """Writes a file under a temporary name and moves it into place when complete, so a
    landing-zone scan never sees half an extract (names starting with _ are skipped)."""

    def __init__(self, location: Location, columns: list[str], encoding: Encoding):
        self.location = location
        self.temp = location.parent.child(f"_{location.name}.tmp")
        self.columns = columns
        self.schema = pa.schema([(c, pa.string()) for c in columns])
        self.encoding = encoding
        self.stream = self.temp.open_write()

    @staticmethod
    def open(location: Location, columns: list[str], fmt: Format, encoding: Encoding) -> _Sink:
        kinds: dict[str, type[_Sink]] = {
            "csv": _CsvSink,
            "parquet": _ParquetSink,
            "jsonl": _JsonlSink,
        }
        return kinds[fmt](location, columns, encoding)

    def write(self, table: pa.Table) -> None:
        raise NotImplementedError

    def finish(self) -> None:
        """Flush what is buffered before the stream closes."""

    def _put(self, data: bytes) -> None:
        if self.encoding != "utf-8":
            data = data.decode("utf-8").encode(self.encoding)
        self.stream.write(data)

    def close(self) -> None:
        self.finish()
        self.stream.close()
        self.temp.move_to(self.location)

    def abort(self) -> None:
        if not self.stream.closed:
            self.stream.close()
        self.temp.delete()


class _CsvSink(_Sink):
    def __init__(self, location: Location, columns: list[str], encoding: Encoding):
        super().__init__(location, columns, encoding)
        self.header = True

    def write(self, table: pa.Table) -> None:
        buffer = pa.BufferOutputStream()
        pacsv.write_csv(table, buffer, pacsv.WriteOptions(include_header=self.header))
        self.header = False
        self._put(buffer.getvalue().to_pybytes())

    def finish(self) -> None:
        if self.header:  # no rows at all: still a header line
            self.write(self.schema.empty_table())


class _JsonlSink(_Sink):
    def write(self, table: pa.Table) -> None:
        parts: list[Any] = []
        for i, name in enumerate(self.columns):
            column = table.column(name).combine_chunks()
            for raw, escaped in (("\\", "\\\\"), ('"', '\\"'), ("\n", "\\n"), ("\r", "\\r")):
                column = pc.replace_substring(column, raw, escaped)
            quoted = pc.fill_null(_join('"', column, '"'), "null")
            parts += [("{" if i == 0 else ",") + f'"{name}":', quoted]
        lines = _join(*parts, "}\n")
        offsets = np.frombuffer(lines.buffers()[1], dtype=np.int32)[lines.offset :]
        data = lines.buffers()[2]
        if data is not None and len(lines):
            # The lines are contiguous in the array's data buffer: write it in one piece.
            start, end = int(offsets[0]), int(offsets[len(lines)])
            self._put(data.slice(start, end - start).to_pybytes())


class _ParquetSink(_Sink):
    def __init__(self, location: Location, columns: list[str], encoding: Encoding):
        super().__init__(location, columns, "utf-8")  # Parquet strings are always UTF-8
        self.writer = pq.ParquetWriter(self.stream, self.schema)
        self.pending: list[pa.Table] = []
        self.pending_rows = 0

    def write(self, table: pa.Table) -> None:
        self.pending.append(table)
        self.pending_rows += table.num_rows
        while self.pending_rows >= PARQUET_ROW_GROUP:
            self._flush(PARQUET_ROW_GROUP)

    def _flush(self, rows: int) -> None:
        # Same rows, same row groups, same contiguous buffers: identical bytes whatever the
        # chunk size.
        merged = pa.concat_tables(self.pending)
        group = merged.slice(0, rows).combine_chunks()
        self.writer.write_table(group, row_group_size=rows)
        rest = merged.slice(rows)
        self.pending = [rest] if rest.num_rows else []
        self.pending_rows = rest.num_rows

    def finish(self) -> None:
        if self.pending_rows:
            self._flush(self.pending_rows)
        self.writer.close()

    def abort(self) -> None:
        try:
            self.writer.close()
        finally:
            super().abort()
